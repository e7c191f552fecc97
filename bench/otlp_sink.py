#!/usr/bin/env python3
"""Minimal OTLP/HTTP (http/protobuf) receiver for bench/run.sh, so the gateway's exporters really send what they
would send to a collector: accepts POST /v1/traces, /v1/metrics and /v1/logs, answers 200 with an empty protobuf
message (a full success) and counts requests and bytes per path; GET /stats returns the counts as JSON.
It does not decode anything. Usage: otlp_sink.py PORT
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _body_length(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()  # the empty line after the last chunk
                    return total
                self.rfile.read(size)
                self.rfile.readline()
                total += size
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        return length

    def do_POST(self):
        size = self._body_length()
        with lock:
            entry = counts.setdefault(self.path, {"requests": 0, "bytes": 0})
            entry["requests"] += 1
            entry["bytes"] += size
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        with lock:
            data = json.dumps(counts).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
