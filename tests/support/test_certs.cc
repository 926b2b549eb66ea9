#include "tests/support/test_certs.h"

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace driftwood::testing {
namespace {

// The openssl configuration: an empty distinguished name (each command
// passes -subj) and the extensions of a CA and of a node certificate.
constexpr char kConfig[] = R"([req]
distinguished_name = dn
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[node_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
)";

constexpr char kNewKey[] =
    "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

std::string Quote(const std::string& path) { return "'" + path + "'"; }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<TestCertificates>> TestCertificates::Create() {
  std::unique_ptr<TestCertificates> certs(new TestCertificates());
  certs->config_file_ = certs->dir() + "/openssl.cnf";
  {
    std::ofstream config(certs->config_file_);
    config << kConfig;
    if (!config.good()) {
      return absl::InternalError(absl::StrCat(
          "test certificates: cannot write ", certs->config_file_));
    }
  }
  if (absl::Status status = certs->MakeCa("ca", &certs->ca_file_);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = certs->MakeCa("rogue-ca", &certs->rogue_ca_file_);
      !status.ok()) {
    return status;
  }
  return certs;
}

absl::Status TestCertificates::OpenSsl(const std::string& arguments) {
  const std::string log = dir() + "/openssl.log";
  const std::string command =
      absl::StrCat("openssl ", arguments, " >", Quote(log), " 2>&1");
  const int status = std::system(command.c_str());
  if (status == 0) return absl::OkStatus();
  std::string how;
  if (status == -1) {
    how = "could not be started";
  } else if (WIFEXITED(status)) {
    how =
        absl::StrCat("exited with ", WEXITSTATUS(status),
                     WEXITSTATUS(status) == 127 ? " (openssl not found?)" : "");
  } else {
    how = absl::StrCat("ended with wait status ", status);
  }
  return absl::InternalError(absl::StrCat("test certificates: `", command, "` ",
                                          how, "; its output:\n",
                                          ReadAll(log)));
}

absl::Status TestCertificates::MakeCa(const std::string& name,
                                      std::string* ca_file) {
  const std::string base = dir() + "/" + name;
  *ca_file = base + ".pem";
  return OpenSsl(absl::StrCat(
      "req -config ", Quote(config_file_), " -x509 ", kNewKey, " -keyout ",
      Quote(base + ".key"), " -out ", Quote(*ca_file),
      " -days 2 -extensions ca_ext -subj '/CN=driftwood test ", name, "'"));
}

absl::StatusOr<CertificateFiles> TestCertificates::IssueBy(
    const std::string& ca, const std::string& name) {
  const std::string ca_base = dir() + "/" + ca;
  const std::string base = dir() + "/" + name;
  CertificateFiles files{.cert_file = base + ".pem",
                         .key_file = base + ".key",
                         .ca_file = ca_base + ".pem"};
  if (absl::Status status = OpenSsl(
          absl::StrCat("req -config ", Quote(config_file_), " -new ", kNewKey,
                       " -keyout ", Quote(files.key_file), " -out ",
                       Quote(base + ".csr"), " -subj '/CN=", name, "'"));
      !status.ok()) {
    return status;
  }
  if (absl::Status status = OpenSsl(absl::StrCat(
          "x509 -req -in ", Quote(base + ".csr"), " -CA ", Quote(files.ca_file),
          " -CAkey ", Quote(ca_base + ".key"), " -set_serial ", next_serial_++,
          " -days 2 -out ", Quote(files.cert_file), " -extfile ",
          Quote(config_file_), " -extensions node_ext"));
      !status.ok()) {
    return status;
  }
  return files;
}

absl::StatusOr<CertificateFiles> TestCertificates::Issue(
    const std::string& name) {
  return IssueBy("ca", name);
}

absl::StatusOr<CertificateFiles> TestCertificates::IssueRogue(
    const std::string& name) {
  return IssueBy("rogue-ca", name);
}

}  // namespace driftwood::testing
