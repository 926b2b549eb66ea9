// TestCertificates (tests/support/test_certs.h): the certificates verify
// against their own CA only, and carry the names a loopback test uses.
#include "tests/support/test_certs.h"

#include <cstdlib>
#include <filesystem>
#include <string>

#include "catch2/catch.hpp"

namespace driftwood::testing {
namespace {

// Whether `openssl verify` accepts `cert` against `ca` for the loopback IP.
bool Verifies(const std::string& ca, const std::string& cert) {
  const std::string command = "openssl verify -verify_ip 127.0.0.1 -CAfile '" +
                              ca + "' '" + cert + "' >/dev/null 2>&1";
  return std::system(command.c_str()) == 0;
}

TEST_CASE("test certificates verify against their own CA and not the other one",
          "[rpc][tls]") {
  auto certs = TestCertificates::Create();
  REQUIRE(certs.ok());
  auto node = (*certs)->Issue("node1");
  REQUIRE(node.ok());
  auto rogue = (*certs)->IssueRogue("rogue");
  REQUIRE(rogue.ok());
  for (const std::string& file :
       {node->cert_file, node->key_file, rogue->cert_file, rogue->key_file,
        (*certs)->ca_file(), (*certs)->rogue_ca_file()}) {
    CHECK(std::filesystem::file_size(file) > 0);
  }
  CHECK(node->ca_file == (*certs)->ca_file());
  CHECK(rogue->ca_file == (*certs)->rogue_ca_file());
  CHECK(Verifies((*certs)->ca_file(), node->cert_file));
  CHECK_FALSE(Verifies((*certs)->ca_file(), rogue->cert_file));
  CHECK(Verifies((*certs)->rogue_ca_file(), rogue->cert_file));
  CHECK_FALSE(Verifies((*certs)->rogue_ca_file(), node->cert_file));
  const std::string dir = (*certs)->dir();
  certs->reset();
  CHECK_FALSE(std::filesystem::exists(dir));
}

}  // namespace
}  // namespace driftwood::testing
