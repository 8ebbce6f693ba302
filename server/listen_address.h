// ckad's --listen address: its host, whether that host is loopback, and
// whether ckad may serve there with the security it is given.
#ifndef CKA_SERVER_LISTEN_ADDRESS_H_
#define CKA_SERVER_LISTEN_ADDRESS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cka::server {

// Splits `listen` ("host:port", an IPv6 host in brackets, optionally after
// gRPC's "ipv4:" or "ipv6:" scheme) and checks the port. Returns the host as
// written, brackets kept, scheme dropped: "0.0.0.0:50051" gives "0.0.0.0",
// "[::1]:0" gives "[::1]". InvalidArgument naming --listen and the value when
// the port is missing or outside [0, 65535], the host is empty, or an IPv6
// host is not in brackets (`flag` is the flag named: --listen, or
// --http-listen for the HTTP address). Thread-safe.
absl::StatusOr<std::string> ListenHost(absl::string_view listen,
                                       absl::string_view flag = "--listen");

// Returns whether `host` (as ListenHost returns it) reaches only this
// machine: "localhost" (any case); an IPv4 literal in 127.0.0.0/8 in
// dotted-quad form, as inet_pton reads it; or, in brackets, the IPv6 loopback
// ::1 or an IPv4-mapped ::ffff:127.x.y.z. Everything else is not loopback,
// including names that merely start with "127." and the short IPv4 forms
// such as "127.1" (the resolver would read it as 127.0.0.1, but ckad judges
// only the canonical form and errs towards asking for security). No name is
// resolved. Thread-safe.
bool IsLoopbackHost(absl::string_view host);

// What protects a listening ckad.
struct ListenSecurity {
  bool auth_tokens = false;     // --auth-tokens given
  bool tls = false;             // --tls-cert and --tls-key given
  bool allow_insecure = false;  // --allow-insecure given
};

// Returns OK when ckad may serve on `listen` with `security`: always on a
// loopback host; on any other host only with both authentication and TLS, or
// when allow_insecure says that less is intended. Otherwise
// InvalidArgument naming `flag`, the host and the flags that would make
// the start acceptable; ListenHost's InvalidArgument for a malformed
// `listen`. Thread-safe.
absl::Status CheckListenSecurity(absl::string_view listen,
                                 const ListenSecurity& security,
                                 absl::string_view flag = "--listen");

}  // namespace cka::server

#endif  // CKA_SERVER_LISTEN_ADDRESS_H_
