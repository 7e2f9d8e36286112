// OpenAI error objects.
#include "serve/errors.h"

namespace iris::serve {

HttpError::HttpError(int status, const std::string& message, std::string param, std::string code,
                     std::string type)
    : std::runtime_error(message),
      status_(status),
      param_(std::move(param)),
      code_(std::move(code)),
      type_(type.empty() ? error_type_for_status(status) : std::move(type)) {}

const char* error_type_for_status(int status) {
  // OpenAI answers bad keys, unknown models and malformed requests alike with "invalid_request_error".
  return status >= 500 ? "server_error" : "invalid_request_error";
}

nlohmann::ordered_json error_body(int status, const std::string& message, const std::string& param,
                                  const std::string& code, const std::string& type) {
  nlohmann::ordered_json e{{"message", message},
                           {"type", type.empty() ? error_type_for_status(status) : type},
                           {"param", nullptr},
                           {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  return nlohmann::ordered_json{{"error", e}};
}

nlohmann::ordered_json error_body(const HttpError& e) {
  return error_body(e.status(), e.what(), e.param(), e.code(), e.type());
}

std::string dump_json(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string dump_json(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace iris::serve
