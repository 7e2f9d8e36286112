// The HTTP side of `iris serve` (see server.h): routes, authentication, body limits, turning a chat request
// into a runtime::Request, and answering with a JSON completion or a server-sent event stream.
#include "serve/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <random>

#include "serve/errors.h"
#include "serve/net_util.h"
#include "serve/openai_format.h"
#include "serve/web_assets.h"
#include "tensor/error.h"

namespace iris::serve {

using json = nlohmann::ordered_json;  // responses keep OpenAI's key order
using namespace std::chrono_literals;

namespace {

// What the scheduler's callbacks (on its thread) hand to the HTTP thread that answers the request.
struct Pending {
  std::mutex mu;
  std::condition_variable cv;
  bool keep_pieces = false;  // streaming: pieces wait here until the HTTP thread sends them
  std::deque<std::string> pieces;
  bool done = false;
  runtime::GenerateResult result;
  std::string error;
  std::atomic<bool> cancelled{false};
  std::shared_ptr<runtime::RequestHandle> handle;

  void cancel() {  // never called with mu held
    cancelled = true;
    std::lock_guard lk(mu);
    if (handle) handle->cancel();
  }
};

// Where the HTTP thread looks for the client having gone away.
struct Connection {
  std::string local_addr, remote_addr;
  int local_port = -1, remote_port = -1;
  int fd = -2;  // -2: not looked up yet; -1: not found (then only failed writes and the time limit end it)

  explicit Connection(const httplib::Request& r)
      : local_addr(r.local_addr),
        remote_addr(r.remote_addr),
        local_port(r.local_port),
        remote_port(r.remote_port) {}
  bool gone() {
    if (fd == -2) fd = find_connection_socket(local_addr, local_port, remote_addr, remote_port);
    return peer_closed(fd);
  }
};

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

void send_error(httplib::Response& res, const HttpError& e) {
  send_json(res, e.status(), error_body(e));
  if (e.status() == 503) res.set_header("Retry-After", "1");
  if (e.status() == 401) res.set_header("WWW-Authenticate", "Bearer");
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

}  // namespace

struct Server::Impl {
  runtime::Scheduler& sched;
  const runtime::Engine& engine;
  ServeOptions opt;
  httplib::Server http;
  std::atomic<bool> stopping{false};
  std::atomic<int> port{-1};
  const int64_t started = unix_now();

  Impl(runtime::Scheduler& s, ServeOptions o) : sched(s), engine(s.engine()), opt(std::move(o)) { setup(); }

  void setup();
  void check_auth(const httplib::Request& req) const;
  void handle_chat(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader);
  runtime::Request prepare(const ChatRequest& chat, int64_t& prompt_tokens) const;
  void answer_plain(const httplib::Request& req, httplib::Response& res, const std::shared_ptr<Pending>& st,
                    const CompletionMeta& meta, int64_t prompt_tokens);
  void answer_stream(const httplib::Request& req, httplib::Response& res, const std::shared_ptr<Pending>& st,
                     const CompletionMeta& meta, int64_t prompt_tokens, bool include_usage);
  // Runs a handler body, turning every exception into an OpenAI error object: bad input is never a 500.
  template <typename F>
  void guarded(httplib::Response& res, F&& f);
};

template <typename F>
void Server::Impl::guarded(httplib::Response& res, F&& f) {
  try {
    f();
  } catch (const HttpError& e) {
    send_error(res, e);
  } catch (const Error& e) {  // iris's parsers and validators: the input was wrong
    send_error(res, HttpError(400, e.what()));
  } catch (const std::bad_alloc&) {
    send_error(res, HttpError(413, "The request is too large to process (out of memory)."));
  } catch (const std::exception& e) {
    send_error(res, HttpError(500, std::string("Internal server error: ") + e.what()));
  }
}

void Server::Impl::setup() {
  const size_t n_threads = size_t(std::max(opt.http_threads, 4));
  http.new_task_queue = [n_threads] { return new httplib::ThreadPool(n_threads); };
  http.set_payload_max_length(opt.max_body_bytes);
  http.set_tcp_nodelay(true);  // streamed chunks are small: don't let Nagle hold them back
  http.set_keep_alive_max_count(1000);

  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res,
                                           const httplib::ContentReader& reader) {
    guarded(res, [&] { handle_chat(req, res, reader); });
  });
  http.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] {
      check_auth(req);
      send_json(res, 200, {{"object", "list"}, {"data", json::array({model_json(opt.model_id, started)})}});
    });
  });
  http.Get("/v1/models/(.+)", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] {
      check_auth(req);
      const std::string id = req.matches[1];
      if (id != opt.model_id)
        throw HttpError(404,
                        "The model '" + id + "' does not exist (this server serves '" + opt.model_id + "').",
                        "model", "model_not_found");
      send_json(res, 200, model_json(opt.model_id, started));
    });
  });
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    runtime::SchedulerStats s = sched.stats();
    send_json(res, 200,
              {{"status", "ok"},
               {"model", opt.model_id},
               {"queued", s.queued},
               {"active", s.active},
               {"completed", s.completed},
               {"rejected", s.rejected},
               {"image_cache", {{"hits", s.image_cache_hits}, {"misses", s.image_cache_misses}}}});
  });
  // The chat page: embedded files, no secrets in them (the page asks for the API key itself).
  http.Get("/(|app\\.js|style\\.css)", [](const httplib::Request& req, httplib::Response& res) {
    const WebAsset* a = find_web_asset(req.path);
    if (!a) {
      send_error(res, HttpError(404, "Not found: " + req.path));
      return;
    }
    res.set_content(a->body.data(), a->body.size(), std::string(a->content_type).c_str());
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Content-Security-Policy",
                   "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                   "connect-src 'self'; frame-ancestors 'none'");
  });
  http.Get("/favicon.ico", [](const httplib::Request&, httplib::Response& res) { res.status = 204; });

  // Errors raised by the HTTP library itself (unknown path, body over the limit, malformed request line) get
  // an OpenAI error body too; bodies the handlers wrote are left alone.
  http.set_error_handler(
      httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        std::string msg, code;
        switch (res.status) {
          case 404:
            msg = "Unknown request URL: " + req.method + " " + req.path + ".";
            code = "unknown_url";
            break;
          case 413:
            msg = "Request body too large: the limit is " + std::to_string(opt.max_body_bytes) + " bytes.";
            code = "request_too_large";
            res.set_header("Connection", "close");
            break;
          case 400:
            msg = "Malformed HTTP request.";
            break;
          default:
            msg = "HTTP error " + std::to_string(res.status) + ".";
            break;
        }
        res.set_content(dump_json(error_body(res.status, msg, "", code)), "application/json");
        // Unhandled keeps the library from applying Range headers to an error, but then it does not count the
        // body either: without a length the client would wait for the connection to close.
        res.set_header("Content-Length", std::to_string(res.body.size()));
        return httplib::Server::HandlerResponse::Unhandled;
      }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, HttpError(500, "Internal server error: " + what));
  });
  if (opt.log_requests)
    http.set_logger([](const httplib::Request& req, const httplib::Response& res) {
      std::fprintf(stderr, "%s %s %s %d\n", req.remote_addr.c_str(), req.method.c_str(), req.path.c_str(),
                   res.status);
    });
}

void Server::Impl::check_auth(const httplib::Request& req) const {
  if (opt.api_key.empty()) return;
  std::string h = trim(req.get_header_value("Authorization"));
  std::string token;
  if (h.size() > 7 && ascii_lower(h.substr(0, 7)) == "bearer ") token = trim(h.substr(7));
  if (token.empty())
    throw HttpError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization header "
        "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        "", "invalid_api_key");
  if (!constant_time_equal(opt.api_key, token))
    throw HttpError(401, "Incorrect API key provided.", "", "invalid_api_key");
}

void Server::Impl::handle_chat(const httplib::Request& req, httplib::Response& res,
                               const httplib::ContentReader& reader) {
  // The body is read (within the limit) before anything is answered, so a client still sending is never cut
  // off mid-request.
  std::string body;
  bool too_large = false;
  size_t discarded = 0;
  bool read_ok = reader([&](const char* data, size_t n) {
    if (too_large || body.size() + n > opt.max_body_bytes) {
      // A chunked body (no Content-Length for the library to check) over the limit: keep reading and dropping
      // it for a while, so the client gets to read the 413 instead of a reset connection.
      too_large = true;
      body.clear();
      discarded += n;
      return discarded < 4 * opt.max_body_bytes;
    }
    body.append(data, n);
    return true;
  });
  if (too_large || res.status == 413) {
    throw HttpError(413,
                    "Request body too large: the limit is " + std::to_string(opt.max_body_bytes) + " bytes.",
                    "", "request_too_large");
  }
  if (!read_ok) throw HttpError(400, "Could not read the request body.");
  check_auth(req);
  std::string type = ascii_lower(req.get_header_value("Content-Type"));
  // Requiring JSON also keeps other web pages out: a browser sends application/json cross-origin only after a
  // CORS preflight, which this server does not grant.
  if (type.rfind("application/json", 0) != 0)
    throw HttpError(415, "Unsupported Content-Type '" + req.get_header_value("Content-Type") +
                             "': send the request body as application/json.");

  ChatRequest chat = parse_chat_request(body, opt.chat, opt.sampling);
  body.clear();
  body.shrink_to_fit();
  int64_t prompt_tokens = 0;
  runtime::Request r = prepare(chat, prompt_tokens);

  auto st = std::make_shared<Pending>();
  st->keep_pieces = chat.stream;
  r.on_text = [st](const std::string& piece) {
    if (st->keep_pieces) {
      std::lock_guard lk(st->mu);
      st->pieces.push_back(piece);
      st->cv.notify_all();
    }
    return !st->cancelled.load();
  };
  r.on_done = [st](const runtime::GenerateResult& result, const std::string& error) {
    std::lock_guard lk(st->mu);
    st->result = result;
    st->error = error;
    st->done = true;
    st->cv.notify_all();
  };
  std::shared_ptr<runtime::RequestHandle> handle = sched.submit(std::move(r));
  if (!handle)
    throw HttpError(503, "The server is overloaded: its request queue is full. Retry shortly.", "",
                    "server_overloaded", "server_error");
  {
    std::lock_guard lk(st->mu);
    st->handle = handle;
  }
  CompletionMeta meta{new_completion_id(), unix_now(), opt.model_id};
  if (chat.stream)
    answer_stream(req, res, st, meta, prompt_tokens, chat.include_usage);
  else
    answer_plain(req, res, st, meta, prompt_tokens);
}

runtime::Request Server::Impl::prepare(const ChatRequest& c, int64_t& prompt_tokens) const {
  if (c.n_images() > 0 && !engine.model().has_vision())
    throw HttpError(400, "This model has no vision tower: it cannot take images (send text only).",
                    "messages", "image_input_not_supported");
  std::vector<runtime::ChatMessage> msgs;
  for (const ChatMessageIn& m : c.messages) msgs.push_back({m.role, m.text, int(m.images.size())});
  runtime::Request r;
  std::string text;
  try {
    text = engine.render_prompt(msgs);
  } catch (const Error& e) {  // e.g. a chat template that raises on roles out of order
    throw HttpError(400, std::string("Could not build the prompt from these messages: ") + e.what(),
                    "messages");
  }
  // Images: decoded and processed (the processor's settings per request); decoding is the expensive part of
  // validation, so it comes after the cheaper checks where the image-token count does not depend on the image.
  models::ProcessOptions popt;
  popt.min_pixels = c.min_pixels;
  popt.max_pixels = c.max_pixels;
  popt.max_tiles = c.max_tiles;
  const std::string settings = str_cat(":", c.min_pixels, ":", c.max_pixels, ":", c.max_tiles);
  auto load_images = [&] {
    for (const ChatMessageIn& m : c.messages) {
      for (const ChatImageRef& ref : m.images) {
        std::string bytes = load_image_url(ref.url, ref.param, opt.images);
        vision::Image img;
        try {
          img = vision::decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), opt.decode,
                                     ref.param);
        } catch (const Error& e) {
          throw HttpError(400, std::string("Invalid image: ") + e.what(), ref.param,
                          "invalid_image");  // names the field
        }
        if (img.channels != 3) img = vision::to_rgb(img);
        models::ImagePixels px;
        try {
          px = engine.process_image(img, &popt);
        } catch (const Error& e) {  // too small, too elongated, a pixel budget it cannot meet
          throw HttpError(400, std::string("Invalid image: ") + e.what(), ref.param, "invalid_image");
        }
        r.images.push_back(
            {std::move(px), opt.image_cache ? runtime::sha256_hex(bytes.data(), bytes.size()) + settings : ""});
      }
    }
  };
  const bool counts_known = !engine.model().has_vision() || engine.model().processor().fixed_tokens() > 0;
  if (!counts_known) load_images();
  try {
    if (engine.model().has_vision() && engine.model().processor().expands_with_markers()) {
      std::vector<models::ImagePixels> px;
      for (const auto& im : r.images) px.push_back(im.pixels);
      r.prompt = engine.tokenize_prompt(text, px);
    } else {
      std::vector<int64_t> counts;
      for (const auto& im : r.images) counts.push_back(engine.model().processor().tokens_for(im.pixels));
      r.prompt = engine.tokenize_prompt(text, counts);
    }
  } catch (const Error& e) {
    throw HttpError(400, std::string("Could not build the prompt from these messages: ") + e.what(),
                    "messages");
  }
  prompt_tokens = int64_t(r.prompt.size());
  const int64_t n_ctx = engine.n_ctx();
  if (prompt_tokens >= n_ctx)
    throw HttpError(400,
                    "This model's maximum context length is " + std::to_string(n_ctx) +
                        " tokens. However, your messages resulted in " + std::to_string(prompt_tokens) +
                        " tokens. Please reduce the length of the messages or the number of images.",
                    "messages", "context_length_exceeded");
  const int64_t room = n_ctx - prompt_tokens;
  int64_t max_tokens = std::min(opt.default_max_tokens, room);
  if (opt.max_tokens_limit > 0) max_tokens = std::min(max_tokens, opt.max_tokens_limit);
  if (c.max_tokens) {
    if (opt.max_tokens_limit > 0 && *c.max_tokens > opt.max_tokens_limit)
      throw HttpError(400,
                      "max_tokens is too large: " + std::to_string(*c.max_tokens) +
                          ". This server allows at most " + std::to_string(opt.max_tokens_limit) +
                          " completion tokens.",
                      "max_tokens", "invalid_value");
    if (*c.max_tokens > room)
      throw HttpError(400,
                      "This model's maximum context length is " + std::to_string(n_ctx) +
                          " tokens. However, you requested " + std::to_string(prompt_tokens + *c.max_tokens) +
                          " tokens (" + std::to_string(prompt_tokens) + " in the messages, " +
                          std::to_string(*c.max_tokens) +
                          " in the completion). Please reduce the length of the messages or completion.",
                      "messages", "context_length_exceeded");
    max_tokens = *c.max_tokens;
  }

  if (counts_known) load_images();  // last: everything cheaper has passed

  r.options.max_new_tokens = int(max_tokens);
  r.options.sampling = c.sampling;
  if (!c.seed_given)
    r.options.sampling.seed =
        std::random_device{}() * uint64_t(0x9E3779B97F4A7C15ull) ^ std::random_device{}();
  try {
    text::validate(r.options.sampling);
  } catch (const Error& e) {
    throw HttpError(400, e.what());
  }
  r.options.stop = c.stop;
  r.options.stop_at_eos = !opt.ignore_eos;
  r.time_limit = opt.time_limit;
  return r;
}

void Server::Impl::answer_plain(const httplib::Request& req, httplib::Response& res,
                                const std::shared_ptr<Pending>& st, const CompletionMeta& meta,
                                int64_t prompt_tokens) {
  Connection conn(req);
  std::unique_lock lk(st->mu);
  bool gone = false;
  auto cancelled_at = std::chrono::steady_clock::time_point::max();
  while (!st->done) {
    st->cv.wait_for(lk, 100ms);
    if (st->done) break;
    lk.unlock();
    if (!gone && (stopping || conn.gone())) {
      gone = true;
      cancelled_at = std::chrono::steady_clock::now();
      st->cancel();
    }
    lk.lock();
    // The scheduler reports every request, cancelled ones too; the bound only guards against it never doing
    // so.
    if (gone && std::chrono::steady_clock::now() - cancelled_at > 10s) break;
  }
  if (gone) {
    // Nobody reads this when the client left; a shutting-down server tells the client to come back.
    send_error(res, stopping ? HttpError(503, "The server is shutting down.", "", "", "server_error")
                             : HttpError(400, "The client closed the request."));
    return;
  }
  if (!st->error.empty()) throw HttpError(500, "Generation failed: " + st->error);
  const runtime::GenerateResult& r = st->result;
  Usage u{prompt_tokens, int64_t(r.tokens.size())};
  send_json(res, 200, completion_json(meta, r.text, openai_finish_reason(r.finish_reason), u));
}

void Server::Impl::answer_stream(const httplib::Request& req, httplib::Response& res,
                                 const std::shared_ptr<Pending>& st, const CompletionMeta& meta,
                                 int64_t prompt_tokens, bool include_usage) {
  struct StreamState {
    bool role_sent = false;
    Connection conn;
  };
  auto ss = std::make_shared<StreamState>(StreamState{false, Connection(req)});
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, st, ss, meta, prompt_tokens, include_usage](size_t, httplib::DataSink& sink) {
        auto write = [&](const std::string& s) {
          if (sink.write(s.data(), s.size())) return true;
          st->cancel();
          return false;
        };
        if (!ss->role_sent) {  // OpenAI's first chunk: the role, with empty content
          ss->role_sent = true;
          return write(
              sse_event(chunk_json(meta, {{"role", "assistant"}, {"content", ""}}, "", include_usage)));
        }
        std::unique_lock lk(st->mu);
        for (;;) {
          if (!st->pieces.empty()) {
            std::string out;
            for (const std::string& p : st->pieces)
              out += sse_event(chunk_json(meta, {{"content", p}}, "", include_usage));
            st->pieces.clear();
            lk.unlock();
            return write(out);
          }
          if (st->done) {
            std::string out;
            if (!st->error.empty()) {
              out += sse_event(error_body(500, "Generation failed: " + st->error));
            } else {
              const runtime::GenerateResult& r = st->result;
              out += sse_event(
                  chunk_json(meta, json::object(), openai_finish_reason(r.finish_reason), include_usage));
              if (include_usage)
                out += sse_event(usage_chunk_json(meta, {prompt_tokens, int64_t(r.tokens.size())}));
            }
            out += sse_done();
            lk.unlock();
            if (!write(out)) return false;
            sink.done();
            return true;
          }
          st->cv.wait_for(lk, 100ms);
          if (st->pieces.empty() && !st->done) {
            lk.unlock();
            if (stopping || ss->conn.gone()) {
              st->cancel();
              return false;
            }
            lk.lock();
          }
        }
      },
      [st](bool success) {
        if (!success) st->cancel();
      });
}

Server::Server(runtime::Scheduler& scheduler, ServeOptions opt)
    : impl_(std::make_unique<Impl>(scheduler, std::move(opt))) {}

Server::~Server() {
  stop();
}

int Server::bind() {
  Impl& m = *impl_;
  // cpp-httplib (Debian's build) listens with a backlog of 5. When more clients connect at once than the
  // accept loop drains, the kernel drops their handshakes or falls back to SYN cookies, and a client can see a
  // reset ("Connection error") on its first request: 16 clients starting together overflowed it in every load
  // test. The listening socket is caught as it is made, and listen() is called again with the system's maximum.
  int listen_fd = -1;
  m.http.set_socket_options([&listen_fd](socket_t fd) {
    httplib::default_socket_options(fd);
    listen_fd = fd;
  });
  int port = m.opt.port;
  if (port == 0) {
    port = m.http.bind_to_any_port(m.opt.host);
    IRIS_CHECK(port > 0, "serve: cannot bind ", m.opt.host, " (any port)");
  } else {
    IRIS_CHECK(m.http.bind_to_port(m.opt.host, port), "serve: cannot bind ", m.opt.host, ":", port,
               " (in use, or not an address of this machine)");
  }
  m.http.set_socket_options(httplib::default_socket_options);  // the lambda's capture ends here
  IRIS_CHECK(listen_fd >= 0 && ::listen(listen_fd, SOMAXCONN) == 0, "serve: cannot listen on ", m.opt.host, ":",
             port);
  m.port = port;
  return port;
}

void Server::run() {
  impl_->http.listen_after_bind();
  impl_->stopping = true;
}

void Server::stop() {
  impl_->stopping = true;
  impl_->http.stop();
  if (impl_->port > 0) shutdown_connections(impl_->port);
}

}  // namespace iris::serve
