// HTTP errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}. Parsing and validation
// throw HttpError with the status to answer; the server turns it (and anything unexpected) into the JSON body
// once.
#pragma once
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace iris::serve {

class HttpError : public std::runtime_error {
 public:
  // type: OpenAI's error type ("invalid_request_error", "server_error", ...), chosen from
  // the status when empty. param: the offending request field ("messages[1].content[0].image_url"), or empty.
  HttpError(int status, const std::string& message, std::string param = {}, std::string code = {},
            std::string type = {});

  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  const std::string& type() const { return type_; }

 private:
  int status_;
  std::string param_, code_, type_;
};

// OpenAI's default error type for a status.
const char* error_type_for_status(int status);

// {"error": {...}} (keys in OpenAI's order); empty param/code become null, as OpenAI writes them.
nlohmann::ordered_json error_body(int status, const std::string& message, const std::string& param = {},
                                  const std::string& code = {}, const std::string& type = {});
nlohmann::ordered_json error_body(const HttpError& e);

// JSON text for a response: invalid UTF-8 (never expected, but model output is not trusted) becomes U+FFFD
// instead of an exception.
std::string dump_json(const nlohmann::json& j);
std::string dump_json(const nlohmann::ordered_json& j);  // keys in the order OpenAI writes them

}  // namespace iris::serve
