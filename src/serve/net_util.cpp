// Constant-time comparison, ASCII lowering and client-disconnect detection (see net_util.h).
#include "serve/net_util.h"

#include <cctype>

#include <dirent.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

namespace iris::serve {

bool constant_time_equal(std::string_view expected, std::string_view given) {
  // The loop runs over the expected key's length whatever the input; only the key's length can be learned.
  volatile unsigned char diff = expected.size() != given.size();
  for (size_t i = 0; i < expected.size(); ++i) {
    unsigned char y = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff = diff | (static_cast<unsigned char>(expected[i]) ^ y);
  }
  return diff == 0;
}

namespace {

// The numeric host and port of a socket address, written as cpp-httplib writes them (getnameinfo, numeric
// host).
bool endpoint(const sockaddr_storage& addr, socklen_t len, std::string& host, int& port) {
  char h[NI_MAXHOST], s[NI_MAXSERV];
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, h, sizeof h, s, sizeof s,
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return false;
  host = h;
  port = std::atoi(s);
  return true;
}

}  // namespace

namespace {

// Calls f(fd) for each socket descriptor of this process; f returns false to stop.
template <typename F>
void for_each_socket(F&& f) {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == dirfd(d)) continue;
    struct stat st {};
    if (fstat(int(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    if (!f(int(fd))) break;
  }
  closedir(d);
}

bool local_endpoint(int fd, std::string& host, int& port) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  return getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0 && endpoint(a, len, host, port);
}

bool remote_endpoint(int fd, std::string& host, int& port) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  return getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0 && endpoint(a, len, host, port);
}

}  // namespace

int find_connection_socket(const std::string& local_addr, int local_port, const std::string& remote_addr,
                           int remote_port) {
  int found = -1;
  for_each_socket([&](int fd) {
    std::string host;
    int port = 0;
    if (!local_endpoint(fd, host, port) || port != local_port || host != local_addr) return true;
    if (!remote_endpoint(fd, host, port) || port != remote_port || host != remote_addr) return true;
    found = fd;
    return false;
  });
  return found;
}

void shutdown_connections(int local_port) {
  for_each_socket([&](int fd) {
    std::string host;
    int port = 0;
    if (local_endpoint(fd, host, port) && port == local_port && remote_endpoint(fd, host, port))
      ::shutdown(fd, SHUT_RDWR);  // the listening socket has no peer and is left alone
    return true;
  });
}

bool peer_closed(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, short(POLLIN | POLLRDHUP), 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)) return true;
  if (p.revents & POLLIN) {  // readable: either a pipelined request (alive) or end of stream (gone)
    char c;
    return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
  }
  return false;
}

std::string ascii_lower(std::string s) {
  for (char& c : s) c = char(std::tolower(uint8_t(c)));
  return s;
}

}  // namespace iris::serve
