"""The LLM judge against a fake OpenAI-compatible chat server on 127.0.0.1 (started here)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from atommem.config import Config, EvalConfig, SynthConfig
from atommem.data.synthetic import generate_synthetic
from atommem.errors import UserError
from atommem.eval.evaluate import evaluation_runners, run_eval
from atommem.eval.judge import JudgeItem, LLMJudge, judge_messages, make_judge, parse_verdict


class _Handler(BaseHTTPRequestHandler):
    requests: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.requests.append((self.path, self.headers.get("Authorization"), body))
        user = body["messages"][-1]["content"]
        pred = user.split("Predicted answer: ")[1].split("\n")[0]
        gold = user.split("Gold answers: ")[1].split("\n")[0].split(" | ")
        if pred == "boom":
            self.send_response(500)
            self.end_headers()
            return
        reply = "maybe?" if pred == "garbage" else ("CORRECT" if pred.lower() in [g.lower() for g in gold] else "INCORRECT.")
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def judge_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_parse_verdict():
    assert parse_verdict("CORRECT") is True
    assert parse_verdict("  incorrect. The answer differs") is False
    assert parse_verdict("**Correct**") is True
    assert parse_verdict("I think it is correct") is None
    assert parse_verdict("") is None


def test_prompt_names_question_golds_and_prediction():
    msgs = judge_messages("city of zorp ?", ["Lima", "lima city"], "lima")
    assert msgs[0]["role"] == "system" and "CORRECT" in msgs[0]["content"]
    assert "city of zorp ?" in msgs[1]["content"] and "Lima | lima city" in msgs[1]["content"]


def test_judge_verdicts_and_counted_failures(judge_url):
    judge = LLMJudge(judge_url, "judge-model", api_key="k")
    items = [JudgeItem("q1", ["Paris"], "paris"), JudgeItem("q2", ["Rome"], "oslo"), JudgeItem("q3", ["x"], "garbage"),
             JudgeItem("q4", ["y"], "boom"), JudgeItem("q5", ["z"], "")]
    res = judge.judge(items)
    assert res.verdicts == [True, False, None, None, False]
    assert res.failures == 2 and len(res.errors) == 2
    path, auth, body = _Handler.requests[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer k" and body["model"] == "judge-model"
    assert len(_Handler.requests) >= 4  # the empty prediction never reached the judge


def test_judge_unreachable_is_failures_not_scores():
    res = LLMJudge("http://127.0.0.1:9/v1", "m", timeout_s=2).judge([JudgeItem("q", ["a"], "a")])
    assert res.verdicts == [None] and res.failures == 1


def test_make_judge_config():
    assert make_judge(EvalConfig()) is None
    with pytest.raises(UserError, match="judge_model"):
        make_judge(EvalConfig(judge_base_url="http://x/v1"))
    with pytest.raises(UserError, match="http"):
        make_judge(EvalConfig(judge_base_url="x/v1", judge_model="m"))


def test_evaluation_with_judge_reports_accuracy_and_failures(judge_url):
    cfg = Config()
    cfg.env.chunk_tokens = 64
    samples = generate_synthetic(SynthConfig(), n=6, seed=0)
    with evaluation_runners(cfg, "oracle", None) as runners:
        r = run_eval(runners, cfg, samples, "oracle", judge=LLMJudge(judge_url, "m"))
    assert r.summary["judge_acc"] == 1.0 and r.summary["judge_failures"] == 0
    assert all(len(e.judged) == len(e.correct) for e in r.episodes)
