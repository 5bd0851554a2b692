#!/usr/bin/python3
"""The main demo: a pass key hidden in a long document, found through the service.

Starts the service locally (two qllm-worker processes with their RocksDB memory stores and a
qllm-coordinator, all in a temporary directory), generates a document of --tokens tokens of
filler text (the built-in model's training distribution) with a pass key at --depth, asks for it
through the gRPC API, and shows the prefill progress, the streamed answer, the evidence the
answer was read from, and the time. Exit status 0 when the answer is the pass key.

  clients/python/pass_key_demo.py --build build                 # ~64K tokens, a few minutes
  clients/python/pass_key_demo.py --build build --million       # 1M tokens
"""
import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import corpus  # noqa: E402  (the training data generator: same filler, same needle)


def wait_port(path, proc, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError("process exited with %s; see its log" % proc.returncode)
        try:
            with open(path) as f:
                port = int(f.read().strip() or 0)
            if port:
                return port
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError("no port in " + path)


def bar(done, total, start, width=40):
    filled = int(width * done / max(total, 1))
    rate = done / max(time.time() - start, 1e-9)
    return "\rprefill [%s%s] %d/%d tokens, %.0f tokens/s " % (
        "#" * filled, "." * (width - filled), done, total, rate)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--model", default=os.path.join(ROOT, "models", "qllm-tiny"))
    p.add_argument("--tokens", type=int, default=65536)
    p.add_argument("--million", action="store_true", help="a 1,048,576-token document")
    p.add_argument("--depth", type=float, default=0.37, help="needle depth in [0, 1]")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--mode", default="qllm", choices=["full", "streaming", "infllm", "qllm"])
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--backend", default="cpu", choices=["cpu", "cuda"],
                   help="what the workers run their layers on (cuda: both on GPU 0)")
    args = p.parse_args()
    if args.million:
        args.tokens = 1 << 20
    sys.path.insert(0, os.path.join(args.build, "python"))
    import grpc
    from qllm.v1 import qllm_pb2, qllm_pb2_grpc

    tmp = tempfile.mkdtemp(prefix="qllm-demo-")
    procs = []
    try:
        workers = []
        for i in range(2):
            pf = os.path.join(tmp, "w%d.port" % i)
            log = open(os.path.join(tmp, "w%d.log" % i), "w")
            procs.append(subprocess.Popen(
                [os.path.join(args.build, "worker", "qllm-worker"), "--listen=127.0.0.1:0",
                 "--port_file=" + pf, "--worker_id=w%d" % i,
                 "--store_dir=" + os.path.join(tmp, "store%d" % i), "--host_cache_mb=256",
                 "--backend=" + args.backend],
                stdout=log, stderr=log))
            workers.append("127.0.0.1:%d" % wait_port(pf, procs[-1]))
        pf = os.path.join(tmp, "c.port")
        log = open(os.path.join(tmp, "c.log"), "w")
        procs.append(subprocess.Popen(
            [os.path.join(args.build, "coordinator", "qllm-coordinator"), "--listen=127.0.0.1:0",
             "--port_file=" + pf, "--model_dir=" + args.model,
             "--data_dir=" + os.path.join(tmp, "coordinator"), "--workers=" + ",".join(workers),
             "--max_prompt_tokens=4000000"], stdout=log, stderr=log))
        address = "127.0.0.1:%d" % wait_port(pf, procs[-1])
        print("service: coordinator %s, %s workers %s (stores in %s)" %
              (address, args.backend, ", ".join(workers), tmp))

        rng = random.Random(args.seed)
        needles, question, key = corpus.task_passkey(rng)
        doc, _ = corpus.make_document(rng, needles, args.tokens, tok=None, depth=args.depth)
        print("document: %d bytes, ~%d tokens, pass key at depth %.0f%%" %
              (len(doc), args.tokens, 100 * args.depth))
        request = qllm_pb2.AskRequest(inline_text=doc.encode(), question=question.encode(),
                                      return_evidence=True)
        request.sampling.max_tokens = 12
        request.memory.mode = qllm_pb2.MemoryParams.Mode.Value("MODE_" + args.mode.upper())
        start = time.time()
        answer = ""
        with grpc.insecure_channel(address, options=[
                ("grpc.max_send_message_length", 64 << 20)]) as channel:
            stub = qllm_pb2_grpc.QLLMStub(channel)
            print("question: " + question)
            for event in stub.Ask(request, timeout=3600):
                kind = event.WhichOneof("event")
                if kind == "progress":
                    print(bar(event.progress.tokens_done, event.progress.tokens_total, start),
                          end="", flush=True)
                elif kind == "text_delta":
                    if not answer:
                        print("\nanswer: ", end="")
                    answer += event.text_delta
                    print(event.text_delta, end="", flush=True)
                elif kind == "result":
                    r = event.result
                    u = r.usage
                    print("\n[%d prompt tokens: prefill %.1f s (%.0f tokens/s); %d answer tokens "
                          "in %.2f s; total %.1f s]" %
                          (u.prompt_tokens, u.prefill_seconds,
                           u.prompt_tokens / max(u.prefill_seconds, 1e-9), u.generated_tokens,
                           u.decode_seconds, time.time() - start))
                    for span in r.evidence[:3]:
                        print("evidence: tokens [%d, %d), bytes [%d, %d) of the document, "
                              "selected %d times: %r" %
                              (span.token_begin, span.token_end, span.text_begin, span.text_end,
                               span.selections, span.text))
        ok = answer.strip() == key
        print("expected %s: %s" % (key, "CORRECT" if ok else "WRONG"))
        return 0 if ok else 1
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
