DROP TABLE IF EXISTS worker_jobs;
DROP TABLE IF EXISTS usage_daily;
