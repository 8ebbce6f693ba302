#include "server/listen_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace cka::server {
namespace {

absl::Status BadListen(absl::string_view flag, absl::string_view listen,
                       absl::string_view expected) {
  return absl::InvalidArgumentError(
      absl::StrCat(flag, " '", listen, "': expected ", expected));
}

}  // namespace

absl::StatusOr<std::string> ListenHost(absl::string_view listen,
                                       absl::string_view flag) {
  absl::string_view address = listen;
  if (!absl::ConsumePrefix(&address, "ipv4:")) {
    absl::ConsumePrefix(&address, "ipv6:");
  }
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return BadListen(flag, listen, "host:port with a port in [0, 65535]");
  }
  const absl::string_view host = address.substr(0, colon);
  const bool bracketed = absl::StartsWith(host, "[");
  if (bracketed != absl::EndsWith(host, "]") ||
      (bracketed && host.size() < 3) ||
      (!bracketed && absl::StrContains(host, ':'))) {
    return BadListen(flag, listen,
                     "an IPv6 host in brackets, as in [::1]:50051");
  }
  return std::string(host);
}

bool IsLoopbackHost(absl::string_view host) {
  if (absl::EqualsIgnoreCase(host, "localhost")) return true;
  if (absl::ConsumePrefix(&host, "[")) {
    if (!absl::ConsumeSuffix(&host, "]")) return false;
    in6_addr v6;
    if (inet_pton(AF_INET6, std::string(host).c_str(), &v6) != 1) return false;
    return IN6_IS_ADDR_LOOPBACK(&v6) ||
           (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
  }
  in_addr v4;
  if (inet_pton(AF_INET, std::string(host).c_str(), &v4) != 1) return false;
  return (ntohl(v4.s_addr) >> 24) == 127;
}

absl::Status CheckListenSecurity(absl::string_view listen,
                                 const ListenSecurity& security,
                                 absl::string_view flag) {
  absl::StatusOr<std::string> host = ListenHost(listen, flag);
  if (!host.ok()) return host.status();
  if (IsLoopbackHost(*host) || security.allow_insecure ||
      (security.auth_tokens && security.tls)) {
    return absl::OkStatus();
  }
  const char* missing;
  const char* fix;
  if (!security.auth_tokens && !security.tls) {
    missing = "neither is given";
    fix = "both";
  } else if (!security.auth_tokens) {
    missing = "--auth-tokens is not given";
    fix = "--auth-tokens";
  } else {
    missing = "--tls-cert/--tls-key are not given";
    fix = "--tls-cert and --tls-key";
  }
  return absl::InvalidArgumentError(absl::StrCat(
      flag, " '", listen, "': host '", *host,
      "' is not loopback, and ckad serves other machines only with "
      "--auth-tokens and --tls-cert/--tls-key, but ",
      missing, "; give ", fix,
      ", listen on 127.0.0.1, or pass --allow-insecure if serving without "
      "them is intended (a private network you trust)"));
}

}  // namespace cka::server
