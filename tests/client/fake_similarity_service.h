// A scripted in-process cka.v1.Similarity server for the client's unit tests:
// it records every batch it reads, acks in order (duplicates marked by batch
// id), rejects the batch ids it is told to, and can end a stream abruptly after
// applying a batch but before acking it — the lost-ack case that the streamer's
// resend logic exists for.
#ifndef CKA_TESTS_CLIENT_FAKE_SIMILARITY_SERVICE_H_
#define CKA_TESTS_CLIENT_FAKE_SIMILARITY_SERVICE_H_

#include <grpcpp/server.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "cka/v1/similarity.grpc.pb.h"

namespace cka::testing {

class FakeSimilarityService final : public v1::Similarity::Service {
 public:
  // GetSession answers with these measures (for the Gram-reduction check).
  void SetMeasures(std::vector<v1::Measure> measures);
  // Acks `batch_id` with `code` and `message` instead of OK.
  void RejectBatch(const std::string& batch_id, grpc::StatusCode code,
                   const std::string& message);
  // The next stream reads `count` batches, applies them, acks all but the last,
  // then ends with UNAVAILABLE.
  void BreakNextStreamAfter(int count);

  std::vector<v1::ActivationBatch> received() const;
  int streams_opened() const;
  int64_t applied() const;

  grpc::Status GetSession(grpc::ServerContext* context,
                          const v1::GetSessionRequest* request,
                          v1::Session* response) override;
  grpc::Status StreamActivations(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::BatchAck, v1::ActivationBatch>* stream)
      override;

 private:
  mutable absl::Mutex mu_;
  std::vector<v1::Measure> measures_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::pair<grpc::StatusCode, std::string>> rejects_
      ABSL_GUARDED_BY(mu_);
  int break_after_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::ActivationBatch> received_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> applied_ ABSL_GUARDED_BY(mu_);
  int streams_ ABSL_GUARDED_BY(mu_) = 0;
};

// A FakeSimilarityService served on 127.0.0.1 at a free port.
struct FakeServer {
  FakeServer();
  ~FakeServer();
  std::string address() const;

  FakeSimilarityService service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

}  // namespace cka::testing

#endif  // CKA_TESTS_CLIENT_FAKE_SIMILARITY_SERVICE_H_
