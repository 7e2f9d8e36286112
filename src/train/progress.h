// The training progress bar on the terminal: step, loss, lr, tokens/s, elapsed time and ETA. On a TTY one
// line is redrawn in place with '\r' (at most every min_redraw_s, and always at the last step); otherwise (a
// log file, a pipe) one plain line is printed every `every` steps, so logs stay readable.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "train/metrics.h"

namespace iris::train {

struct ProgressOptions {
  std::FILE* out = stderr;
  int tty = -1;        // 1: redraw in place, 0: plain lines, -1: isatty(out)
  int64_t every = 10;  // plain lines: one every `every` steps (and the first and the last)
  double min_redraw_s = 0.1;
  int bar_width = 20;  // characters between the brackets; 0 hides the bar
};

class ProgressBar {
 public:
  // total_steps: the step the run ends at; start_step: where this process started (a resumed run), so that
  // the ETA uses this process's own rate.
  ProgressBar(int64_t total_steps, int64_t start_step = 0, ProgressOptions opt = {});
  ~ProgressBar();  // finish()
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // After each optimizer step; a non-empty note (e.g. other metrics) is appended to the line after " | ".
  void update(const StepMetrics& m, const std::string& note = "");
  void message(const std::string& s);  // a line of text (a checkpoint saved, an eval result) above the bar
  void finish();                       // ends the redrawn line with a newline (once)

  bool tty() const { return tty_; }
  // The text of one line, without '\r' or '\n' (eta_s < 0: unknown).
  std::string format(const StepMetrics& m, double eta_s) const;
  static std::string format_duration(double seconds);  // "42s", "03:25", "1:02:03"

 private:
  double seconds_since_start() const;
  void write(const std::string& s);

  int64_t total_, start_;
  ProgressOptions opt_;
  bool tty_;
  std::chrono::steady_clock::time_point t0_;
  double last_draw_ = -1e9;
  std::string last_line_;  // TTY: the line on screen, to redraw after a message
  size_t last_len_ = 0;
  bool open_line_ = false;  // TTY: the cursor is at the end of a drawn bar
};

}  // namespace iris::train
