// A JSON Lines file that several threads append to, one line per call,
// flushed at once so that a run that dies keeps what was recorded.
#ifndef DRIFTWOOD_JEPSEN_CLIENT_JSON_LOG_H_
#define DRIFTWOOD_JEPSEN_CLIENT_JSON_LOG_H_

#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

namespace driftwood::jepsen {

class JsonLog {
 public:
  explicit JsonLog(const std::string& path) : out_(path, std::ios::app) {}
  bool ok() const { return static_cast<bool>(out_); }

  void Write(const nlohmann::json& line) {
    const std::string text = line.dump();
    std::lock_guard<std::mutex> lock(mu_);
    out_ << text << '\n';
    out_.flush();
  }

 private:
  std::mutex mu_;
  std::ofstream out_;
};

}  // namespace driftwood::jepsen

#endif  // DRIFTWOOD_JEPSEN_CLIENT_JSON_LOG_H_
