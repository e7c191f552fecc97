using HelixAgent.Api.Gateway;

namespace HelixAgent.Tests.Gateway;

/// <summary>How the ensemble scores and picks among its members' answers.</summary>
public sealed class EnsembleScoringTests
{
    private static EnsembleCandidate C(string text, string? finish = "stop", double weight = 1, bool preferred = false, double latencyMs = 10) =>
        new(text, finish, weight, preferred, latencyMs);

    [Fact]
    public void Agreement_is_word_set_similarity_ignoring_case_and_punctuation()
    {
        var a = EnsembleScoring.Words("Paris is the capital.");
        Assert.Equal(1.0, EnsembleScoring.Similarity(a, EnsembleScoring.Words("the CAPITAL is Paris")));
        Assert.Equal(0.0, EnsembleScoring.Similarity(a, EnsembleScoring.Words("Lyon")));
        Assert.Equal(0.8, EnsembleScoring.Similarity(a, EnsembleScoring.Words("Paris is the capital city")), 6);
    }

    [Fact]
    public void An_answer_cut_off_by_the_length_limit_loses_to_the_same_answer_finished()
    {
        var chosen = EnsembleScoring.Choose(EnsemblePlan.ConfidenceWeighted, [C("Paris is the capital", "length", latencyMs: 1), C("Paris is the capital", "stop", latencyMs: 50)], out var scores, out _);

        Assert.Equal(1, chosen);
        Assert.True(scores[1] > scores[0]);
    }

    [Fact]
    public void An_empty_answer_scores_nothing_and_the_heavier_provider_wins_between_equal_answers()
    {
        var chosen = EnsembleScoring.Choose(EnsemblePlan.ConfidenceWeighted, [C(""), C("Paris", weight: 1), C("Paris", weight: 3)], out var scores, out var votes);

        Assert.Equal(2, chosen);
        Assert.Equal(0, scores[0]);
        Assert.Equal(0, votes[0]);
        Assert.True(scores[2] > scores[1]);
    }

    [Fact]
    public void Majority_vote_counts_answers_that_differ_only_in_case_spacing_and_final_punctuation_as_one()
    {
        var chosen = EnsembleScoring.Choose(EnsemblePlan.MajorityVote, [C("Lyon."), C("paris  is the capital"), C("Paris is the capital!")], out var scores, out var votes);

        Assert.Equal([1, 2, 2], votes);
        Assert.Equal([0.3333, 0.6667, 0.6667], scores);
        Assert.NotEqual(0, chosen);
    }

    [Fact]
    public void Between_equal_scores_a_preferred_provider_wins_then_the_quicker_answer()
    {
        Assert.Equal(1, EnsembleScoring.Choose(EnsemblePlan.MajorityVote, [C("yes", latencyMs: 1), C("no", preferred: true, latencyMs: 99)], out _, out _));
        Assert.Equal(1, EnsembleScoring.Choose(EnsemblePlan.MajorityVote, [C("yes", latencyMs: 99), C("no", latencyMs: 1)], out _, out _));
    }

    [Fact]
    public void Tool_calls_are_compared_by_name_and_arguments()
    {
        var completion = System.Text.Json.Nodes.JsonNode.Parse("""
            {"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}]}
            """)!.AsObject();

        Assert.Equal("get_weather({\"city\":\"Paris\"})", EnsembleScoring.TextOf(completion));
        Assert.Equal("tool_calls", EnsembleScoring.FinishReasonOf(completion));
    }
}
