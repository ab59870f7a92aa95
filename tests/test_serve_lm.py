"""frugal serve for language models, against real servers on 127.0.0.1: the OpenAI API (the stock `openai`
client included), greedy answers equal to the engine's alone, streaming, stop strings, limits, disconnects
and the drain on SIGTERM. Tiny random Llama folders here; SmolLM2 against `frugal generate` in a slow test."""

import asyncio
import json
import signal
import subprocess
import sys
import time

import httpx
import pytest

import transformers  # noqa: F401  (an installed extra: a missing one fails, never skips)

from frugalml.runtime.lm.engine import Engine, EngineConfig
from frugalml.runtime.lm.generate import generate
from frugalml.serve import ServeConfig, running
from conftest import free_port
from lm_models import tiny_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path, _, _ = tiny_folder(tmp_path_factory.mktemp("lm") / "tiny")
    return str(path)


@pytest.fixture(scope="module")
def engine(folder):
    return Engine.load(folder, EngineConfig(cache=False))


@pytest.fixture(scope="module")
def server(folder):
    with running(folder, ServeConfig(port=0, context=256, max_batch_size=4)) as url:
        yield url


PROMPTS = ["w1 w2 w3", "w9 w8 w7 w6 w5 w4", "w100", "w42 w42 w42 w7 w200 w13 w5", "w3 w1 w4 w1 w5 w9 w2 w6"]


def alone(engine, prompt: str, n: int) -> str:
    """The greedy continuation the engine gives this raw prompt with nothing beside it."""
    ids = [int(i) for i in engine.tokenizer.encode(prompt)]
    out = generate(engine.model, ids, n, eos_id=engine.tokenizer.eos_token_id)
    return engine.tokenizer.decode(out.tokens, skip_special_tokens=True)


def stream(url: str, path: str, body: dict) -> list[dict]:
    """The SSE events of one streamed request, [DONE] last."""
    events = []
    with httpx.stream("POST", url + path, json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                events.append("[DONE]" if data == "[DONE]" else json.loads(data))
    return events


def test_models_lists_the_served_model(server):
    body = httpx.get(f"{server}/v1/models").json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["tiny"]


def test_greedy_completions_equal_the_engine_alone_streamed_or_not(server, engine):
    for prompt in PROMPTS[:3]:
        want = alone(engine, prompt, 12)
        r = httpx.post(f"{server}/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 12,
                                                        "temperature": 0}, timeout=60)
        body = r.json()
        assert r.status_code == 200 and body["choices"][0]["text"] == want
        assert body["usage"]["prompt_tokens"] == len(prompt.split())
        events = stream(server, "/v1/completions", {"prompt": prompt, "max_tokens": 12, "temperature": 0,
                                                    "stream_options": {"include_usage": True}})
        assert events[-1] == "[DONE]" and events[-2]["choices"] == [] and events[-2]["usage"] == body["usage"]
        assert "".join(e["choices"][0]["text"] for e in events[:-2]) == want
        assert events[-3]["choices"][0]["finish_reason"] == body["choices"][0]["finish_reason"]
        assert all(e["usage"] is None for e in events[:-2])


def test_concurrent_requests_get_their_solo_answers(server, engine):
    want = [alone(engine, p, 20) for p in PROMPTS]

    async def go():
        async with httpx.AsyncClient(base_url=server, timeout=60) as c:
            return await asyncio.gather(*(c.post("/v1/completions", json={"prompt": p, "max_tokens": 20,
                                                                          "temperature": 0}) for p in PROMPTS * 2))

    got = [r.json()["choices"][0]["text"] for r in asyncio.run(go())]
    assert got == want * 2  # more requests than rows (4): some joined as others left


def test_the_stock_openai_client_works_unchanged(server, engine):
    import openai

    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    done = client.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=8, temperature=0)
    assert done.choices[0].text == alone(engine, PROMPTS[1], 8) and done.usage.completion_tokens == 8
    parts = client.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=8, temperature=0, stream=True)
    assert "".join(p.choices[0].text for p in parts if p.choices) == done.choices[0].text
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-5", prompt="w1", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model="tiny", prompt="w1 " * 250, max_tokens=10)


def test_chat_streams_a_role_first_then_content(server):
    # the tiny tokenizer has no chat template: one user message is sent as is, as `frugal generate` does
    msg = [{"role": "user", "content": PROMPTS[0]}]
    done = httpx.post(f"{server}/v1/chat/completions", json={"messages": msg, "max_tokens": 6, "temperature": 0},
                      timeout=60).json()
    assert done["object"] == "chat.completion" and done["choices"][0]["message"]["role"] == "assistant"
    events = stream(server, "/v1/chat/completions", {"messages": msg, "max_tokens": 6, "temperature": 0})
    assert events[0]["choices"][0]["delta"]["role"] == "assistant" and events[0]["object"] == "chat.completion.chunk"
    assert len({e["id"] for e in events[:-1]}) == 1
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == done["choices"][0]["message"]["content"]
    r = httpx.post(f"{server}/v1/chat/completions", json={"messages": msg + [{"role": "assistant", "content": "w1"}]})
    assert r.status_code == 400 and "chat template" in r.json()["error"]["message"]


def test_stop_strings_end_the_answer_before_them(server, engine):
    full = alone(engine, PROMPTS[3], 16)
    word = full.split()[3]
    cut = full[:full.index(word)]
    for streamed in (False, True):
        body = {"prompt": PROMPTS[3], "max_tokens": 16, "temperature": 0, "stop": [word, "never"]}
        if streamed:
            events = stream(server, "/v1/completions", body)
            text = "".join(e["choices"][0]["text"] for e in events[:-1])
            reason = events[-2]["choices"][0]["finish_reason"]
        else:
            choice = httpx.post(f"{server}/v1/completions", json=body, timeout=60).json()["choices"][0]
            text, reason = choice["text"], choice["finish_reason"]
        assert (text, reason) == (cut, "stop")


def test_sampling_is_seeded(server):
    body = {"prompt": PROMPTS[1], "max_tokens": 12, "temperature": 1.0, "top_p": 0.9, "seed": 3}
    a, b = (httpx.post(f"{server}/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
            for _ in range(2))
    assert a == b


@pytest.mark.parametrize("body, status, word", [
    ({"prompt": "w1 " * 250, "max_tokens": 10}, 400, "250 tokens"),
    ({"prompt": "", "max_tokens": 10}, 400, "empty"),
    ({"prompt": "w1", "max_tokens": 0}, 422, "max_tokens"),
    ({"prompt": "w1", "temperature": -1}, 422, "temperature"),
    ({"prompt": "w1", "n": 2}, 422, "n"),
    ({"prompt": "w1", "logprobs": 3}, 422, "logprobs"),
    ({"prompt": "w1", "model": "other"}, 404, "other"),
    ({"prompt": ["w1", "w2"]}, 400, "one prompt"),
    ({"prompt": [1, 2, 99999]}, 400, "token ids"),
    ({"max_tokens": 3}, 422, "prompt"),
    ({"prompt": "w1", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
])
def test_bad_requests_get_the_right_status(server, body, status, word):
    r = httpx.post(f"{server}/v1/completions", json=body, timeout=60)
    assert r.status_code == status, r.text
    assert word in r.json()["error"]["message"]


def running_and_cancelled(url) -> tuple[float, float]:
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in f.samples:
            values[(s.name, s.labels.get("finished_reason"))] = s.value
    return values[("frugal_requests_running", None)], values.get(("frugal_request_success_total", "cancelled"), 0)


def test_a_client_that_leaves_frees_its_row(server):
    _, cancelled = running_and_cancelled(server)
    with httpx.stream("POST", f"{server}/v1/completions", json={"prompt": "w5 w6", "max_tokens": 200,
                                                                "stream": True, "temperature": 0}) as r:
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and running_and_cancelled(server) != (0, cancelled + 1):
        time.sleep(0.05)
    assert running_and_cancelled(server) == (0, cancelled + 1)
    r = httpx.post(f"{server}/v1/completions", json={"prompt": "w1", "max_tokens": 3}, timeout=60)
    assert r.status_code == 200


def test_a_client_that_gives_up_on_a_plain_request_frees_its_row_too(server):
    _, cancelled = running_and_cancelled(server)
    with pytest.raises(httpx.ReadTimeout):  # the client leaves before the answer is complete
        httpx.post(f"{server}/v1/completions", json={"prompt": "w5 w6", "max_tokens": 240, "temperature": 0,
                                                     "stop": "never appears"}, timeout=0.1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and running_and_cancelled(server) != (0, cancelled + 1):
        time.sleep(0.05)
    assert running_and_cancelled(server) == (0, cancelled + 1)


def test_a_full_queue_answers_429_with_retry_after(folder):
    with running(folder, ServeConfig(port=0, context=256, max_batch_size=1, max_queue=1)) as url:
        async def go():
            async with httpx.AsyncClient(base_url=url, timeout=60) as c:
                return await asyncio.gather(*(c.post("/v1/completions", json={"prompt": "w1 w2", "max_tokens": 100})
                                              for _ in range(8)))

        answers = asyncio.run(go())
        codes = sorted(r.status_code for r in answers)
        # one running and one waiting; or one only, when the burst came before the first had started running
        # (CI's busy machine, once)
        assert set(codes) == {200, 429} and codes.count(200) >= 1
        assert all(int(r.headers["retry-after"]) >= 1 for r in answers if r.status_code == 429)


@pytest.mark.slow
def test_sigterm_lets_a_stream_finish_then_exits_0(folder):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "frugalml.cli", "serve", folder, "--port", str(port),
                             "--context", "256", "--no-cache"], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        from frugalml.serve.server import wait_ready

        wait_ready(url, 120, alive=lambda: proc.poll() is None)
        events = []
        with httpx.stream("POST", f"{url}/v1/completions", json={"prompt": "w1 w2", "max_tokens": 200,
                                                                 "stream": True, "temperature": 0}) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line)
                    if len(events) == 2:
                        proc.send_signal(signal.SIGTERM)
        assert events[-1] == "data: [DONE]"
        assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("length", "stop")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.slow
def test_smollm2_greedy_answers_equal_frugal_generate_alone_or_among_others(capsys):
    """The embedded model, its chat template, and the CLI's own printout as the reference."""
    import openai

    from frugalml.cli import main

    prompts = ["What is the capital of France?", "Write a haiku about the sea.", "List three prime numbers.",
               "Why is the sky blue?"]
    want = []
    for p in prompts:
        assert main(["generate", "builtin:smollm2", p, "--max-new-tokens", "24"]) == 0
        want.append(capsys.readouterr().out.rstrip("\n"))
    with running("builtin:smollm2", ServeConfig(port=0, context=512, max_batch_size=4)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

        def ask(p, stream=False):
            r = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": p}],
                                               max_tokens=24, temperature=0, stream=stream)
            return "".join(c.choices[0].delta.content or "" for c in r if c.choices) if stream else \
                r.choices[0].message.content

        assert ask(prompts[0]) == want[0] and ask(prompts[1], stream=True) == want[1]  # alone

        async def together():
            aclient = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

            async def one(p, stream):
                r = await aclient.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": p}],
                                                          max_tokens=24, temperature=0, stream=stream)
                if not stream:
                    return r.choices[0].message.content
                return "".join([c.choices[0].delta.content or "" async for c in r if c.choices])

            return await asyncio.gather(*(one(p, i % 2 == 1) for i, p in enumerate(prompts * 2)))

        assert asyncio.run(together()) == want * 2
        system = client.chat.completions.create(
            model="smollm2", max_tokens=8, temperature=0,
            messages=[{"role": "system", "content": "Answer in French."}, {"role": "user", "content": prompts[0]}])
        assert system.choices[0].message.content and system.usage.prompt_tokens > 10


def test_speculative_engines_serve_one_request_at_a_time_with_the_same_greedy_answers(folder, engine):
    want = [alone(engine, p, 16) for p in PROMPTS[:3]]
    config = ServeConfig(port=0, context=256, engine=EngineConfig(prompt_lookup=2, cache=False))
    with running(folder, config) as url:
        async def go():
            async with httpx.AsyncClient(base_url=url, timeout=60) as c:
                return await asyncio.gather(*(c.post("/v1/completions", json={"prompt": p, "max_tokens": 16,
                                                                              "temperature": 0}) for p in PROMPTS[:3]))

        assert [r.json()["choices"][0]["text"] for r in asyncio.run(go())] == want
        events = stream(url, "/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 16, "temperature": 0})
        assert "".join(e["choices"][0]["text"] for e in events[:-1]) == want[0]
