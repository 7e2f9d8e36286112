// iris serve: an OpenAI-compatible HTTP server (chat completions, streaming, images) with a chat page at /.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>

#include "cli/common.h"
#include "runtime/scheduler.h"
#include "serve/server.h"
#include "tensor/error.h"

namespace iris::cli {

namespace {

// Ctrl+C / SIGTERM stop the server cleanly. The handler only writes the signal number to a pipe (all a signal
// handler may safely do, and it works whichever thread the signal lands on); a thread reads it and stops the
// server.
std::mutex g_server_mu;
serve::Server* g_server = nullptr;
int g_signal_pipe[2] = {-1, -1};

void on_signal(int sig) {
  unsigned char b = static_cast<unsigned char>(sig);
  ssize_t n = ::write(g_signal_pipe[1], &b, 1);
  (void)n;
}

void start_signal_thread() {
  IRIS_CHECK(::pipe(g_signal_pipe) == 0, "serve: cannot create a pipe for signals");
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::thread([] {
    for (;;) {
      unsigned char sig = 0;
      ssize_t n = ::read(g_signal_pipe[0], &sig, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      std::lock_guard lk(g_server_mu);
      if (!g_server) std::_Exit(128 + sig);  // still loading the model: nothing to shut down
      std::fprintf(stderr, "iris serve: stopping\n");
      g_server->stop();
    }
  }).detach();
}

// --watch-stdin: a supervising parent (a test, a process manager) that dies closes our stdin; stop with it.
void start_stdin_watch() {
  std::thread([] {
    char buf[256];
    while (true) {
      ssize_t n = ::read(0, buf, sizeof buf);
      if (n == 0 || (n < 0 && errno != EINTR)) break;
    }
    std::lock_guard lk(g_server_mu);
    if (!g_server) std::_Exit(1);
    g_server->stop();
  }).detach();
}

}  // namespace

Runner add_serve(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    SamplingFlags sampling;
    serve::ServeOptions serve;
    int parallel = 4, queue = 64;
    double timeout_s = 600;
    bool ignore_eos = false;
    double max_body_mb = 32, max_image_mb = 20, image_cache_mb = 256;
    std::string model_name;
    bool quiet = false, watch_stdin = false;
  };
  auto o = std::make_shared<Opts>();
  o->model.max_image_pixels = 16'000'000;  // a server decodes for strangers: 16 MP (e.g. 4900x3265) is plenty
  o->model.add(app);
  o->sampling.add(app);
  app.add_option("--host", o->serve.host, "address to listen on (default 127.0.0.1: this machine only)");
  app.add_option("--port", o->serve.port, "port (0: any free port, printed at start)")
      ->check(CLI::Range(0, 65535));
  app.add_option(
      "--api-key", o->serve.api_key,
      "require 'Authorization: Bearer KEY' on /v1/ (default: $IRIS_API_KEY when set, else no key)");
  app.add_option("--parallel", o->parallel, "requests decoded together at each step (continuous batching)")
      ->check(CLI::Range(1, 256));
  app.add_option("--queue", o->queue, "requests waiting beyond --parallel; more are answered 503")
      ->check(CLI::Range(0, 100000));
  app.add_flag("--ignore-eos", o->ignore_eos, "keep generating past EOS (until max_tokens, a stop string or the time limit)");
  app.add_option("--timeout", o->timeout_s, "time limit per request in seconds, queueing included (0: none)")
      ->check(CLI::Range(0.0, 1e7));
  app.add_option("-n,--n-predict", o->serve.default_max_tokens,
                 "completion tokens when a request sets no max_tokens (capped by the context)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  app.add_option("--max-tokens", o->serve.max_tokens_limit,
                 "refuse requests asking for more completion tokens (0: only the context limits them)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 30));
  app.add_option("--max-body-mb", o->max_body_mb, "largest request body, in MiB (answered 413 beyond)")
      ->check(CLI::Range(0.001, 4096.0));
  app.add_option("--max-image-mb", o->max_image_mb, "largest encoded image, in MiB")
      ->check(CLI::Range(0.001, 4096.0));
  app.add_option("--max-images", o->serve.chat.max_images, "images per request at most");
  app.add_option("--image-cache-mb", o->image_cache_mb,
                 "image-embedding cache (LRU by content hash), MiB; 0: off")
      ->check(CLI::Range(0.0, 1e6));
  app.add_option("--allow-local-images", o->serve.images.allow_local_dir,
                 "let image_url name files inside this folder (file:///... or a path); off by default");
  app.add_option("--model-name", o->model_name,
                 "model id shown by /v1/models and in responses (default: the folder name)");
  app.add_flag("--quiet", o->quiet, "no request log on stderr");
  app.add_flag("--watch-stdin", o->watch_stdin,
               "stop when standard input closes (for a supervising parent process)");
  return [o] {
    serve::ServeOptions& so = o->serve;
    if (so.api_key.empty())
      if (const char* k = std::getenv("IRIS_API_KEY")) so.api_key = k;
    if (!so.images.allow_local_dir.empty())
      IRIS_CHECK(std::filesystem::is_directory(so.images.allow_local_dir), "--allow-local-images: '",
                 so.images.allow_local_dir, "' is not a folder");
    signal(SIGPIPE,
           SIG_IGN);  // a client that hangs up mid-answer is a failed write, not the end of the server
    start_signal_thread();
    if (o->watch_stdin) start_stdin_watch();

    o->model.apply_threads();
    o->model.resolve();
    runtime::EngineOptions eo = o->model.engine_options();
    auto engine = runtime::Engine::load(o->model.model, eo);
    const text::SamplingParams sampling = o->sampling.resolve(engine->generation_defaults());
    text::validate(sampling);

    runtime::SchedulerOptions sched_opt;
    sched_opt.max_active = o->parallel;
    sched_opt.max_queue = o->queue;
    sched_opt.image_cache_bytes = size_t(o->image_cache_mb * 1024 * 1024);
    runtime::Scheduler scheduler(*engine, sched_opt);

    so.model_id = o->model_name;
    if (so.model_id.empty()) {
      std::filesystem::path p = std::filesystem::absolute(o->model.model).lexically_normal();
      so.model_id = p.has_filename() ? p.filename().string() : p.parent_path().filename().string();
    }
    so.sampling = sampling;
    so.decode = eo.decode;
    so.max_body_bytes = size_t(o->max_body_mb * 1024 * 1024);
    so.images.max_image_bytes = size_t(o->max_image_mb * 1024 * 1024);
    so.time_limit = std::chrono::milliseconds(int64_t(o->timeout_s * 1000));
    so.ignore_eos = o->ignore_eos;
    so.http_threads =
        o->parallel + o->queue + 8;  // one per open connection: every admitted request, plus spare
    so.log_requests = !o->quiet;
    so.image_cache = o->image_cache_mb > 0;

    serve::Server server(scheduler, so);
    int port = server.bind();
    if (so.api_key.empty() && so.host != "127.0.0.1" && so.host != "localhost" && so.host != "::1")
      std::fprintf(
          stderr,
          "iris serve: warning: listening on %s without --api-key: anyone who can reach it can use it\n",
          so.host.c_str());
    std::printf("iris serve: model '%s' (context %lld tokens, %s), parallel %d, queue %d\n",
                so.model_id.c_str(), (long long)engine->n_ctx(),
                engine->model().has_vision() ? "images" : "text only", o->parallel, o->queue);
    std::string shown = so.host.find(':') != std::string::npos ? "[" + so.host + "]" : so.host;
    std::printf("iris serve: listening on http://%s:%d (chat page at /, API at /v1)\n", shown.c_str(), port);
    std::fflush(stdout);
    {
      std::lock_guard lk(g_server_mu);
      g_server = &server;
    }
    server.run();
    {
      std::lock_guard lk(g_server_mu);
      g_server = nullptr;
    }
    return 0;
  };
}

}  // namespace iris::cli
