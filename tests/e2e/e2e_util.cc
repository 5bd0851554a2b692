#include "tests/e2e/e2e_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/generic/generic_stub.h"

namespace qllm::e2e {

absl::StatusOr<std::unique_ptr<Process>> Process::Start(const std::vector<std::string>& argv,
                                                        const std::string& log_path) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot open ", log_path));
  const pid_t pid = ::fork();
  if (pid < 0) return absl::UnavailableError("fork failed");
  if (pid == 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(fd);
  return std::unique_ptr<Process>(new Process(pid));
}

Process::~Process() {
  if (!reaped_) {
    Kill(SIGKILL);
    Wait();
  }
}

void Process::Kill(int signal) {
  if (!reaped_) ::kill(pid_, signal);
}

int Process::Wait() {
  int status = 0;
  if (!reaped_) {
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
  }
  return status;
}

bool Process::running() {
  if (reaped_) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    reaped_ = true;
    return false;
  }
  return true;
}

absl::StatusOr<int> WaitForPortFile(const std::string& path, absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    std::ifstream in(path);
    int port = 0;
    if (in >> port && port > 0) return port;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat("no port in ", path));
}

bool HealthServing(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  // HealthCheckRequest{service: ""} is the empty message.
  grpc::Slice empty;
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   std::lock_guard<std::mutex> lock(mu);
                   status = s;
                   done = true;
                   cv.notify_all();
                 });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  if (!status.ok()) return false;
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return false;
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  // HealthCheckResponse{status: SERVING (1)}: field 1, varint 1.
  return bytes == std::string("\x08\x01", 2);
}

Client::Client(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(64 << 20);
  args.SetMaxReceiveMessageSize(64 << 20);
  channel_ = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  stub_ = v1::QLLM::NewStub(channel_);
  admin_ = v1::Admin::NewStub(channel_);
}

namespace {
void SetDeadline(grpc::ClientContext* c, absl::Duration d) {
  if (d != absl::ZeroDuration()) c->set_deadline(absl::ToChronoTime(absl::Now() + d));
}
}  // namespace

AskOutcome Client::Ask(const v1::AskRequest& request, absl::Duration deadline,
                       const std::function<bool(const v1::Progress&)>& on_progress) {
  AskOutcome out;
  grpc::ClientContext context;
  SetDeadline(&context, deadline);
  auto reader = stub_->Ask(&context, request);
  v1::AskResponse response;
  while (reader->Read(&response)) {
    if (response.has_progress()) {
      out.progress.push_back(response.progress());
      if (on_progress && !on_progress(response.progress())) context.TryCancel();
    } else if (response.has_text_delta()) {
      out.streamed_text += response.text_delta();
    } else if (response.has_result()) {
      out.result = response.result();
    }
  }
  out.status = reader->Finish();
  return out;
}

grpc::Status Client::CreateDocument(const v1::DocumentMetadata& metadata, const std::string& text,
                                    v1::Document* out, size_t piece_bytes,
                                    absl::Duration deadline) {
  grpc::ClientContext context;
  SetDeadline(&context, deadline);
  auto stream = stub_->CreateDocument(&context);
  v1::CreateDocumentRequest r;
  *r.mutable_metadata() = metadata;
  stream->Write(r);
  for (size_t i = 0; i < text.size(); i += piece_bytes) {
    v1::CreateDocumentRequest piece;
    piece.set_text_chunk(text.substr(i, piece_bytes));
    if (!stream->Write(piece)) break;
  }
  stream->WritesDone();
  v1::CreateDocumentResponse response;
  while (stream->Read(&response)) {
    if (response.has_document() && out != nullptr) *out = response.document();
  }
  return stream->Finish();
}

grpc::Status Client::CreateDocumentRaw(const std::vector<v1::CreateDocumentRequest>& messages) {
  grpc::ClientContext context;
  auto stream = stub_->CreateDocument(&context);
  for (const auto& m : messages) {
    if (!stream->Write(m)) break;
  }
  stream->WritesDone();
  v1::CreateDocumentResponse response;
  while (stream->Read(&response)) {
  }
  return stream->Finish();
}

grpc::Status Client::GetDocument(const std::string& id, v1::Document* out) {
  grpc::ClientContext context;
  v1::GetDocumentRequest r;
  r.set_document_id(id);
  return stub_->GetDocument(&context, r, out);
}

grpc::Status Client::ListDocuments(const v1::ListDocumentsRequest& request,
                                   v1::ListDocumentsResponse* out) {
  grpc::ClientContext context;
  return stub_->ListDocuments(&context, request, out);
}

grpc::Status Client::DeleteDocument(const std::string& id) {
  grpc::ClientContext context;
  v1::DeleteDocumentRequest r;
  r.set_document_id(id);
  v1::DeleteDocumentResponse response;
  return stub_->DeleteDocument(&context, r, &response);
}

grpc::Status Client::ClusterStatus(v1::ClusterStatus* out) {
  grpc::ClientContext context;
  return admin_->GetClusterStatus(&context, v1::GetClusterStatusRequest(), out);
}

v1::AskRequest MakeAsk(const std::string& question, const std::string& inline_text,
                       v1::MemoryParams::Mode mode, int max_tokens) {
  v1::AskRequest r;
  r.set_question(question);
  if (!inline_text.empty()) r.set_inline_text(inline_text);
  r.mutable_memory()->set_mode(mode);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  return r;
}

std::string MakeHaystack(int sentences, int seed, const std::string& needle) {
  static const char* kWords[] = {"the",   "river", "stone", "quiet", "garden", "morning",
                                 "light", "walks", "over",  "green", "hills",  "slowly",
                                 "a",     "small", "bird",  "sings", "near",   "old"};
  std::mt19937 rng(seed);
  std::string out;
  for (int i = 0; i < sentences; ++i) {
    if (i == sentences / 2) out += " " + needle;
    std::string s;
    const int n = 6 + static_cast<int>(rng() % 6);
    for (int w = 0; w < n; ++w) {
      s += (w == 0 ? "" : " ");
      s += kWords[rng() % (sizeof(kWords) / sizeof(kWords[0]))];
    }
    s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
    out += " " + s + ".";
  }
  return out;
}

}  // namespace qllm::e2e
