// Driftwood: throwaway certificates for the TLS tests, made at test time by
// the `openssl` command line in a temporary folder (removed with the
// TestCertificates object), so nothing key-like lives in the repository.
//
//   auto certs = TestCertificates::Create();
//   auto node1 = (*certs)->Issue("node1");  // signed by the cluster CA
//   auto rogue = (*certs)->IssueRogue("rogue");  // signed by another CA
//
// Every node certificate names `DNS:localhost, IP:127.0.0.1` (subject
// alternative names), is valid for client and server authentication, and
// has an unencrypted P-256 key. Certificates are valid from now for two
// days.
//
// Thread safety: none; one test thread uses an object.
#ifndef DRIFTWOOD_TESTS_SUPPORT_TEST_CERTS_H_
#define DRIFTWOOD_TESTS_SUPPORT_TEST_CERTS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tests/support/temp_dir.h"

namespace driftwood::testing {

// PEM files of one node.
struct CertificateFiles {
  // The node's certificate (the leaf only) and its private key.
  std::string cert_file;
  std::string key_file;
  // The certificate of the CA that signed cert_file.
  std::string ca_file;
};

class TestCertificates {
 public:
  // Makes the cluster CA and the rogue CA. Internal (with the openssl
  // command, its exit status and its output) when openssl fails.
  static absl::StatusOr<std::unique_ptr<TestCertificates>> Create();

  TestCertificates(const TestCertificates&) = delete;
  TestCertificates& operator=(const TestCertificates&) = delete;

  // A certificate for common name `name` signed by the cluster CA.
  // REQUIRES: `name` is made of letters, digits, '-' and '_', and was not
  // issued before by this object.
  absl::StatusOr<CertificateFiles> Issue(const std::string& name);
  // The same, signed by the rogue CA (which no cluster trusts).
  absl::StatusOr<CertificateFiles> IssueRogue(const std::string& name);

  // The cluster CA's and the rogue CA's certificates.
  const std::string& ca_file() const { return ca_file_; }
  const std::string& rogue_ca_file() const { return rogue_ca_file_; }
  // The folder holding every file.
  const std::string& dir() const { return dir_.path(); }

 private:
  TestCertificates() = default;

  // Runs openssl with `arguments` (a shell command line tail).
  absl::Status OpenSsl(const std::string& arguments);
  absl::Status MakeCa(const std::string& name, std::string* ca_file);
  absl::StatusOr<CertificateFiles> IssueBy(const std::string& ca,
                                           const std::string& name);

  TempDir dir_;
  std::string config_file_;
  std::string ca_file_;
  std::string rogue_ca_file_;
  int next_serial_ = 1;
};

}  // namespace driftwood::testing

#endif  // DRIFTWOOD_TESTS_SUPPORT_TEST_CERTS_H_
