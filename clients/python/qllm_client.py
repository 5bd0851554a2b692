#!/usr/bin/python3
"""A QLLM client example: ask a question about a text (inline or stored) and stream the answer.

Uses Debian's python3-grpcio and the Python code the build generates from proto/qllm/v1
(build/python; pass --generated or set QLLM_PYTHON_OUT when it lives elsewhere).

  qllm_client.py --address 127.0.0.1:50051 --text-file doc.txt --question "What is the pass key?"
  qllm_client.py --address ... --text-file doc.txt --document-id manual --create
  qllm_client.py --address ... --document-id manual --question "..."
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def load_stubs(generated):
    sys.path.insert(0, generated)
    from qllm.v1 import qllm_pb2, qllm_pb2_grpc  # noqa: E402
    return qllm_pb2, qllm_pb2_grpc


def progress_bar(done, total, width=40):
    filled = int(width * done / max(total, 1))
    return "[%s%s] %d/%d tokens" % ("#" * filled, "." * (width - filled), done, total)


def create_document(pb, stub, args, text):
    chunk = 1 << 20  # Well below the server's message limit.

    def requests():
        meta = pb.DocumentMetadata(document_id=args.document_id, title=args.title or "")
        yield pb.CreateDocumentRequest(metadata=meta)
        data = text.encode("utf-8")
        for i in range(0, len(data), chunk):
            yield pb.CreateDocumentRequest(text_chunk=data[i:i + chunk])

    for event in stub.CreateDocument(requests(), timeout=args.timeout):
        if event.HasField("progress"):
            print("\r" + progress_bar(event.progress.tokens_done, event.progress.tokens_total),
                  end="", file=sys.stderr, flush=True)
        elif event.HasField("document"):
            d = event.document
            print("\nstored %s: %d tokens, %d bytes" % (d.document_id, d.tokens, d.bytes))


def ask(pb, stub, args, text):
    request = pb.AskRequest(question=args.question.encode("utf-8"),
                            return_evidence=args.evidence)
    if args.document_id:
        request.document_id = args.document_id
    else:
        request.inline_text = text.encode("utf-8")
    request.sampling.max_tokens = args.max_tokens
    if args.mode:
        request.memory.mode = pb.MemoryParams.Mode.Value("MODE_" + args.mode.upper())
    start = time.time()
    answer = []
    for event in stub.Ask(request, timeout=args.timeout):
        kind = event.WhichOneof("event")
        if kind == "progress":
            print("\r" + progress_bar(event.progress.tokens_done, event.progress.tokens_total),
                  end="", file=sys.stderr, flush=True)
        elif kind == "text_delta":
            if not answer:
                print(file=sys.stderr)
                print("answer: ", end="")
            answer.append(event.text_delta)
            print(event.text_delta, end="", flush=True)
        elif kind == "result":
            r = event.result
            print()
            u = r.usage
            print("[%d prompt tokens, prefill %.2f s; %d generated, decode %.2f s; total %.2f s]" %
                  (u.prompt_tokens, u.prefill_seconds, u.generated_tokens, u.decode_seconds,
                   time.time() - start))
            for span in r.evidence[:3]:
                print("evidence: tokens [%d, %d) selected %d times: %r" %
                      (span.token_begin, span.token_end, span.selections, span.text))
    return "".join(answer)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--address", default="127.0.0.1:50051")
    p.add_argument("--generated", default=os.environ.get(
        "QLLM_PYTHON_OUT", os.path.join(HERE, "..", "..", "build", "python")))
    p.add_argument("--text-file")
    p.add_argument("--question")
    p.add_argument("--document-id")
    p.add_argument("--title")
    p.add_argument("--create", action="store_true", help="store --text-file as --document-id")
    p.add_argument("--mode", choices=["full", "streaming", "infllm", "qllm"])
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--evidence", action="store_true")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args()
    import grpc
    pb, pb_grpc = load_stubs(args.generated)
    text = open(args.text_file, encoding="utf-8").read() if args.text_file else None
    with grpc.insecure_channel(args.address, options=[
            ("grpc.max_send_message_length", 16 << 20)]) as channel:
        stub = pb_grpc.QLLMStub(channel)
        try:
            if args.create:
                create_document(pb, stub, args, text)
            if args.question:
                ask(pb, stub, args, text)
        except grpc.RpcError as e:
            print("\nerror: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
