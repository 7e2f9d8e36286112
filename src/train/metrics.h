// Training metrics: one JSON object per step in a JSONL file (flushed line by line, so a killed run keeps
// what it logged, and a resumed run drops the lines after its checkpoint), and the loss curve drawn as an SVG
// file (axes, ticks, labels, the raw loss and a smoothed line), written by hand with no plotting library.
#pragma once
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace iris::train {

struct StepMetrics {
  int64_t step = 0;  // optimizer steps completed (1 after the first)
  double loss = 0;
  double lr = 0;            // the learning rate this step ran with
  double grad_norm = 0;     // total gradient norm before clipping
  int64_t tokens = 0;       // tokens trained on so far (all steps, across resumes)
  double tokens_per_s = 0;  // recent throughput
  double elapsed_s = 0;     // training time so far (across resumes)
};

nlohmann::json to_json(
    const StepMetrics& m);  // {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s"}
StepMetrics step_metrics_from_json(const nlohmann::json& j);  // throws naming the missing or mistyped field

class MetricsLog {
 public:
  // A new run (resume_step empty) starts the file afresh. A resumed run keeps only the lines with
  // step <= *resume_step (those of the checkpoint it resumes from), so steps re-run after a crash are not
  // logged twice. Throws naming the path when it cannot be written.
  explicit MetricsLog(const std::string& path, std::optional<int64_t> resume_step = std::nullopt);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  // Appends one line: the fields of m, then those of `more` (an object; e.g. the loss of each task). Flushed.
  void log(const StepMetrics& m, const nlohmann::json& more = nlohmann::json::object());
  const std::string& path() const { return path_; }

  // Every well-formed line of a metrics file (a torn last line from a crash is skipped); empty when the file
  // does not exist.
  static std::vector<StepMetrics> read(const std::string& path);

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
};

struct PlotOptions {
  int width = 800, height = 480;  // pixels
  // Weight of the exponential moving average drawn as the smoothed line (TensorBoard's debiased EMA);
  // negative: 1 - 40/n for n points (0 up to 40 points, 0.9 for 400, at most 0.99), so the line lags by about
  // 1/40 of the run.
  double smoothing = -1;
};

// The SVG text of a loss curve: one polyline with one point per step (non-finite losses are left out) and one
// with the smoothed loss. steps and losses must have the same length.
std::string loss_plot_svg(const std::vector<int64_t>& steps, const std::vector<double>& losses,
                          const std::string& title, const PlotOptions& opt = {});
// Writes loss_plot_svg atomically to path.
void write_loss_plot_svg(const std::string& path, const std::vector<int64_t>& steps,
                         const std::vector<double>& losses, const std::string& title,
                         const PlotOptions& opt = {});
// The same plot as a PNG (drawn with a built-in 5x7 pixel font), written atomically.
void write_loss_plot_png(const std::string& path, const std::vector<int64_t>& steps,
                         const std::vector<double>& losses, const std::string& title,
                         const PlotOptions& opt = {});

// The smoothed curve the plots draw (debiased EMA; non-finite values are skipped and repeat the last value).
std::vector<double> smooth_losses(const std::vector<double>& losses, double smoothing);

}  // namespace iris::train
