// JSON round trip of the run configurations (TrainerConfig, ClipConfig) from one list of field names: every
// field is written; reading starts from the defaults and takes the fields present (so a run folder written by
// an older iris, without newer fields, still resumes).
#pragma once
#include <nlohmann/json.hpp>

#define IRIS_CONFIG_JSON_PUT(f) j[#f] = f;
#define IRIS_CONFIG_JSON_GET(f) \
  if (j.contains(#f)) j.at(#f).get_to(c.f);
// Defines Type::to_json() and Type::from_json(j) over FIELDS(X), an X-macro list of the fields.
#define IRIS_CONFIG_JSON(Type, FIELDS)          \
  nlohmann::json Type::to_json() const {        \
    nlohmann::json j;                           \
    FIELDS(IRIS_CONFIG_JSON_PUT)                \
    return j;                                   \
  }                                             \
  Type Type::from_json(const nlohmann::json& j) { \
    Type c;                                     \
    FIELDS(IRIS_CONFIG_JSON_GET)                \
    return c;                                   \
  }
