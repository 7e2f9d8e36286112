// Small pieces of network plumbing the HTTP library does not offer: a constant-time key comparison, lowering
// header values, and noticing that a client has gone away while its request is still being computed (so the
// scheduler can drop it).
#pragma once
#include <string>
#include <string_view>

namespace iris::serve {

// Compares without an early exit, so the time taken does not reveal how much of a guessed key was right.
bool constant_time_equal(std::string_view expected, std::string_view given);

// The descriptor of this process's TCP connection with these endpoints, or -1. cpp-httplib 0.11 does not hand
// the socket to handlers; it does give both addresses, which identify the connection.
int find_connection_socket(const std::string& local_addr, int local_port, const std::string& remote_addr,
                           int remote_port);

// Shuts down every connected TCP socket of this process whose local port is `local_port`: on shutdown,
// connections idling in keep-alive would otherwise hold their worker threads (and the exit) for the
// keep-alive timeout.
void shutdown_connections(int local_port);

// s with ASCII letters lowered (HTTP header values, media types).
std::string ascii_lower(std::string s);

// True when the peer has closed or reset the connection (checked without blocking or consuming data).
bool peer_closed(int fd);

}  // namespace iris::serve
