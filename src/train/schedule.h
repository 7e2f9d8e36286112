// Learning-rate schedules: linear warmup, then constant, cosine or linear decay, with Hugging Face's formulas
// (transformers' get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
// get_linear_schedule_with_warmup, run through torch's LambdaLR: lr = base_lr * factor(step)), step counted
// from 0.
#pragma once
#include <cstdint>
#include <string>

namespace iris::train {

struct ScheduleConfig {
  std::string kind = "constant";  // constant, cosine, linear
  int64_t warmup_steps = 0;       // factor rises linearly from 0 at step 0 to 1 at step warmup_steps
  int64_t total_steps = 0;        // cosine and linear reach their floor here (required for them)
  // Floor of the decay as a fraction of base_lr (0 = Hugging Face's schedules exactly). With r > 0 the decay
  // factor f becomes f*(1-r) + r, as transformers' get_cosine_with_min_lr_schedule_with_warmup.
  double min_lr_ratio = 0;
};

// Checks kind, non-negative step counts, total_steps > 0 for cosine/linear, 0 <= min_lr_ratio <= 1.
void validate_schedule(const ScheduleConfig& cfg);

// The multiplier of base_lr at `step` (0-based): in double, in the same order of operations as the Python
// lambdas, so lr matches LambdaLR to the last bit. After total_steps the factor stays at its final value.
double schedule_factor(const ScheduleConfig& cfg, int64_t step);
// base_lr * schedule_factor(cfg, step). Validates cfg.
double schedule_lr(const ScheduleConfig& cfg, double base_lr, int64_t step);

}  // namespace iris::train
