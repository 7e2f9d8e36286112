// Warmup + constant/cosine/linear learning-rate schedules with Hugging Face's formulas (see schedule.h).
#include "train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "tensor/error.h"

namespace iris::train {

void validate_schedule(const ScheduleConfig& cfg) {
  IRIS_CHECK(cfg.kind == "constant" || cfg.kind == "cosine" || cfg.kind == "linear",
             "schedule: unknown kind '", cfg.kind, "' (expected constant, cosine or linear)");
  IRIS_CHECK(cfg.warmup_steps >= 0, "schedule: warmup_steps must be >= 0, got ", cfg.warmup_steps);
  IRIS_CHECK(cfg.total_steps >= 0, "schedule: total_steps must be >= 0, got ", cfg.total_steps);
  if (cfg.kind != "constant")
    IRIS_CHECK(cfg.total_steps > 0, "schedule: the ", cfg.kind, " schedule needs total_steps > 0");
  IRIS_CHECK(cfg.min_lr_ratio >= 0 && cfg.min_lr_ratio <= 1, "schedule: min_lr_ratio must be in [0, 1], got ",
             cfg.min_lr_ratio);
}

double schedule_factor(const ScheduleConfig& cfg, int64_t step) {
  step = std::max<int64_t>(step, 0);
  if (step < cfg.warmup_steps)  // HF: float(current_step) / float(max(1, num_warmup_steps))
    return double(step) / double(std::max<int64_t>(1, cfg.warmup_steps));
  if (cfg.kind == "constant") return 1.0;
  // Past the end the factor keeps its final value (HF's cosine would rise again; nobody wants that).
  step = std::min(step, std::max(cfg.total_steps, cfg.warmup_steps));
  const double r = cfg.min_lr_ratio;
  double f;
  if (cfg.kind == "cosine") {
    // HF: progress = float(step - warmup) / float(max(1, total - warmup));
    //     max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))), num_cycles = 0.5
    double progress =
        double(step - cfg.warmup_steps) / double(std::max<int64_t>(1, cfg.total_steps - cfg.warmup_steps));
    f = 0.5 * (1.0 + std::cos(std::numbers::pi * 0.5 * 2.0 * progress));
    if (r > 0) f = f * (1 - r) + r;
    return std::max(0.0, f);
  }
  // linear, HF: max(0.0, float(total - step) / float(max(1, total - warmup)))
  f = std::max(
      0.0, double(cfg.total_steps - step) / double(std::max<int64_t>(1, cfg.total_steps - cfg.warmup_steps)));
  if (r > 0) f = f * (1 - r) + r;
  return f;
}

double schedule_lr(const ScheduleConfig& cfg, double base_lr, int64_t step) {
  validate_schedule(cfg);
  return base_lr * schedule_factor(cfg, step);
}

}  // namespace iris::train
