#include "fake_similarity_service.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"

namespace cka::testing {

void FakeSimilarityService::SetMeasures(std::vector<v1::Measure> measures) {
  absl::MutexLock lock(&mu_);
  measures_ = std::move(measures);
}

void FakeSimilarityService::RejectBatch(const std::string& batch_id,
                                        grpc::StatusCode code,
                                        const std::string& message) {
  absl::MutexLock lock(&mu_);
  rejects_[batch_id] = {code, message};
}

void FakeSimilarityService::BreakNextStreamAfter(int count) {
  absl::MutexLock lock(&mu_);
  break_after_ = count;
}

std::vector<v1::ActivationBatch> FakeSimilarityService::received() const {
  absl::MutexLock lock(&mu_);
  return received_;
}

int FakeSimilarityService::streams_opened() const {
  absl::MutexLock lock(&mu_);
  return streams_;
}

int64_t FakeSimilarityService::applied() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(applied_.size());
}

grpc::Status FakeSimilarityService::GetSession(
    grpc::ServerContext*, const v1::GetSessionRequest* request,
    v1::Session* response) {
  absl::MutexLock lock(&mu_);
  response->set_session_id(request->session_id());
  for (const v1::Measure& m : measures_)
    *response->mutable_config()->add_measures() = m;
  return grpc::Status::OK;
}

grpc::Status FakeSimilarityService::StreamActivations(
    grpc::ServerContext*,
    grpc::ServerReaderWriter<v1::BatchAck, v1::ActivationBatch>* stream) {
  int break_after = 0;
  {
    absl::MutexLock lock(&mu_);
    ++streams_;
    break_after = break_after_;
    break_after_ = 0;
  }
  v1::ActivationBatch batch;
  int read = 0;
  while (stream->Read(&batch)) {
    ++read;
    v1::BatchAck ack;
    ack.set_session_id(batch.session_id());
    ack.set_source(batch.source());
    ack.set_batch_id(batch.batch_id());
    {
      absl::MutexLock lock(&mu_);
      received_.push_back(batch);
      auto reject = rejects_.find(batch.batch_id());
      if (reject != rejects_.end()) {
        ack.set_code(reject->second.first);
        ack.set_message(reject->second.second);
      } else {
        ack.set_duplicate(!applied_.insert(batch.batch_id()).second);
      }
    }
    if (break_after > 0 && read == break_after) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "fake: connection lost");
    }
    if (!stream->Write(ack)) break;
  }
  return grpc::Status::OK;
}

FakeServer::FakeServer() {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(256 << 20);
  server = builder.BuildAndStart();
}

FakeServer::~FakeServer() { server->Shutdown(); }

std::string FakeServer::address() const {
  return absl::StrCat("127.0.0.1:", port);
}

}  // namespace cka::testing
