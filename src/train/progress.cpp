// Terminal progress bar for training (see progress.h).
#include "train/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace iris::train {

ProgressBar::ProgressBar(int64_t total_steps, int64_t start_step, ProgressOptions opt)
    : total_(total_steps), start_(start_step), opt_(opt), t0_(std::chrono::steady_clock::now()) {
  if (!opt_.out) opt_.out = stderr;
  tty_ = opt_.tty >= 0 ? opt_.tty != 0 : ::isatty(::fileno(opt_.out)) != 0;
  if (opt_.every < 1) opt_.every = 1;
}

ProgressBar::~ProgressBar() {
  finish();
}

double ProgressBar::seconds_since_start() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
}

std::string ProgressBar::format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  int64_t t = int64_t(std::llround(s));
  char buf[48];
  if (t < 60)
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(t));
  else if (t < 3600)
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(t / 60),
                  static_cast<long long>(t % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                  static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  return buf;
}

std::string ProgressBar::format(const StepMetrics& m, double eta_s) const {
  std::string s;
  char buf[128];
  int digits = int(std::to_string(std::max<int64_t>(total_, 1)).size());
  std::snprintf(buf, sizeof buf, "step %*lld/%lld", digits, static_cast<long long>(m.step),
                static_cast<long long>(total_));
  s += buf;
  double frac = total_ > 0 ? std::clamp(double(m.step) / double(total_), 0.0, 1.0) : 0.0;
  if (opt_.bar_width > 0) {
    int filled = int(frac * opt_.bar_width);
    s += " [" + std::string(size_t(filled), '#') + std::string(size_t(opt_.bar_width - filled), '.') + "]";
  }
  std::snprintf(buf, sizeof buf, " %3.0f%% | loss %.4f | lr %.2e | %.0f tok/s | %s | ETA %s", frac * 100,
                m.loss, m.lr, m.tokens_per_s, format_duration(m.elapsed_s).c_str(),
                format_duration(eta_s).c_str());
  s += buf;
  return s;
}

void ProgressBar::write(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), opt_.out);
  std::fflush(opt_.out);
}

void ProgressBar::update(const StepMetrics& m, const std::string& note) {
  double now = seconds_since_start();
  int64_t done = m.step - start_;
  double eta = done > 0 ? now / double(done) * double(std::max<int64_t>(total_ - m.step, 0)) : -1;
  bool last = m.step >= total_;
  if (tty_) {
    if (!last && now - last_draw_ < opt_.min_redraw_s) return;
    last_draw_ = now;
    std::string line = format(m, eta);
    if (!note.empty()) line += " | " + note;
    // Pad over a longer previous line instead of relying on terminal escape codes.
    std::string out = "\r" + line;
    if (line.size() < last_len_) out += std::string(last_len_ - line.size(), ' ');
    last_len_ = line.size();
    last_line_ = line;
    open_line_ = true;
    write(out);
  } else {
    if (!(m.step == start_ + 1 || m.step % opt_.every == 0 || last)) return;
    write(format(m, eta) + (note.empty() ? "" : " | " + note) + "\n");
  }
}

void ProgressBar::message(const std::string& s) {
  if (tty_ && open_line_) {
    std::string out = "\r" + s;
    if (s.size() < last_len_) out += std::string(last_len_ - s.size(), ' ');
    write(out + "\n" + last_line_);
    last_len_ = last_line_.size();
  } else {
    write(s + "\n");
  }
}

void ProgressBar::finish() {
  if (tty_ && open_line_) write("\n");
  open_line_ = false;
}

}  // namespace iris::train
