// KeyIndex (statemachine/mvcc/key_index.h): which change holds a key's value
// at a revision, what compaction removes, the prune point readers must not
// go below, the previous change, and the value cache's budget.
#include "statemachine/mvcc/key_index.h"

#include <catch2/catch.hpp>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "statemachine/ordered_kv.h"

namespace driftwood::mvcc {
namespace {

using Change = KeyIndex::Change;

mvccpb::KeyValue Put(int64_t revision, const std::string& value) {
  mvccpb::KeyValue kv;
  kv.set_mod_revision(revision);
  kv.set_create_revision(revision);
  kv.set_version(1);
  kv.set_value(value);
  return kv;
}

void RecordPut(KeyIndex& index, const std::string& key, int64_t revision,
               uint32_t sub = 0, const std::string& value = "v") {
  const mvccpb::KeyValue kv = Put(revision, value);
  index.Record(key, Change{.revision = revision, .sub = sub}, &kv);
}

void RecordDelete(KeyIndex& index, const std::string& key, int64_t revision) {
  index.Record(key, Change{.revision = revision, .deleted = true}, nullptr);
}

// The keys of [key, range_end) with a value at `revision`, each as
// "key@revision".
std::vector<std::string> At(const KeyIndex& index, const std::string& key,
                            const std::string& range_end, int64_t revision) {
  std::vector<KeyIndex::Visible> visible;
  REQUIRE(index.VisibleAt(key, range_end, revision, &visible).ok());
  std::vector<std::string> out;
  for (const KeyIndex::Visible& v : visible) {
    out.push_back(v.key + "@" + std::to_string(v.change.revision));
  }
  return out;
}

const std::string kAll(1, '\0');

TEST_CASE("key index: a read at a revision sees each key's newest put",
          "[statemachine][mvcc]") {
  KeyIndex index;
  RecordPut(index, "a", 2);
  RecordPut(index, "b", 3);
  RecordPut(index, "a", 4);
  RecordDelete(index, "b", 5);
  RecordPut(index, "b", 6);
  CHECK(At(index, "a", kAll, 1).empty());
  CHECK(At(index, "a", kAll, 2) == std::vector<std::string>{"a@2"});
  CHECK(At(index, "a", kAll, 3) == std::vector<std::string>{"a@2", "b@3"});
  CHECK(At(index, "a", kAll, 5) == std::vector<std::string>{"a@4"});
  CHECK(At(index, "a", kAll, 6) == std::vector<std::string>{"a@4", "b@6"});
  // etcd's ranges: one key, [key, end), and an end at or before the key.
  CHECK(At(index, "b", "", 6) == std::vector<std::string>{"b@6"});
  CHECK(At(index, "a", "b", 6) == std::vector<std::string>{"a@4"});
  CHECK(At(index, "b", "a", 6).empty());
  CHECK(At(index, "c", "", 6).empty());
}

TEST_CASE(
    "key index: compaction keeps each live key's newest put and every later "
    "change, and reads below it are asked again",
    "[statemachine][mvcc]") {
  KeyIndex index;
  RecordPut(index, "a", 2);
  RecordPut(index, "a", 3);
  RecordPut(index, "b", 4);
  RecordDelete(index, "b", 5);
  RecordPut(index, "c", 6);
  RecordPut(index, "a", 7);
  std::vector<std::string> removed;
  index.ForEachCompacted(6, [&](std::string_view key, const Change& change) {
    removed.push_back(std::string(key) + "@" + std::to_string(change.revision));
  });
  // a@3 holds a's value at 6; b was deleted at 5; c@6 is c's value.
  CHECK(removed == std::vector<std::string>{"a@2", "b@4", "b@5"});
  index.Prune(6);
  CHECK(index.pruned_through() == 6);
  CHECK(index.key_count() == 2);
  CHECK(At(index, "a", kAll, 6) == std::vector<std::string>{"a@3", "c@6"});
  CHECK(At(index, "a", kAll, 7) == std::vector<std::string>{"a@7", "c@6"});
  // What the prune removed is gone for good: nothing more to compact at 6.
  size_t more = 0;
  index.ForEachCompacted(6, [&](std::string_view, const Change&) { ++more; });
  CHECK(more == 0);

  std::vector<KeyIndex::Visible> visible;
  const absl::Status below = index.VisibleAt("a", kAll, 5, &visible);
  CHECK(statemachine::IsQueryAgain(below));
  CHECK(visible.empty());
}

TEST_CASE("key index: the change before a change, for prev_kv",
          "[statemachine][mvcc]") {
  KeyIndex index;
  RecordPut(index, "a", 2);
  RecordPut(index, "b", 2, 1);
  RecordDelete(index, "a", 3);
  RecordPut(index, "a", 4);
  RecordPut(index, "a", 5);

  auto before = index.Before("a", Change{.revision = 5});
  REQUIRE(before.ok());
  REQUIRE(before->has_value());
  CHECK((*before)->revision == 4);
  before = index.Before("a", Change{.revision = 4});
  REQUIRE(before.ok());
  CHECK((*before)->deleted);
  before = index.Before("b", Change{.revision = 2, .sub = 1});
  REQUIRE(before.ok());
  CHECK_FALSE(before->has_value());
  // A change the index does not hold.
  CHECK(index.Before("b", Change{.revision = 2}).status().code() ==
        absl::StatusCode::kDataLoss);

  // After compaction at 3, a's first change is its put at 4: its deletion
  // went with the compaction, and nothing came before it.
  index.Prune(3);
  before = index.Before("a", Change{.revision = 4});
  REQUIRE(before.ok());
  CHECK_FALSE(before->has_value());
  CHECK(statemachine::IsQueryAgain(
      index.Before("a", Change{.revision = 3}).status()));
}

TEST_CASE("key index: Prefetch is a hint that changes nothing",
          "[statemachine][mvcc]") {
  KeyIndex index;
  RecordPut(index, "a", 2, 0, "1");
  RecordPut(index, "a", 3, 0, "2");
  RecordPut(index, "b", 4, 0, std::string(100, 'b'));
  RecordDelete(index, "c", 5);
  const size_t cached_bytes = index.value_cache_bytes();
  // Known keys (cached, deleted) and unknown ones, repeated.
  index.Prefetch({"a", "b", "c", "missing", "a", ""});
  index.Prefetch({});
  CHECK(index.value_cache_bytes() == cached_bytes);
  CHECK(index.key_count() == 3);
  REQUIRE(index.Newest("a").has_value());
  REQUIRE(index.Newest("a")->cached.has_value());
  CHECK(index.Newest("a")->cached->value() == "2");
  CHECK(index.Newest("a")->change.revision == 3);
  CHECK(index.Newest("b")->cached->value() == std::string(100, 'b'));
  CHECK(index.Newest("c")->change.deleted);
  CHECK_FALSE(index.Newest("missing").has_value());
  CHECK(At(index, "", kAll, 2) == std::vector<std::string>{"a@2"});
  CHECK(At(index, "", kAll, 5) == std::vector<std::string>{"a@3", "b@4"});
}

TEST_CASE("key index: the value cache keeps newest puts within its budget",
          "[statemachine][mvcc]") {
  // Each cached value costs its size plus 96 bytes.
  KeyIndex index(2 * (96 + 10));
  RecordPut(index, "a", 2, 0, std::string(10, 'a'));
  RecordPut(index, "b", 3, 0, std::string(10, 'b'));
  RecordPut(index, "c", 4, 0, std::string(10, 'c'));  // over the budget
  CHECK(index.value_cache_bytes() == 2 * (96 + 10));
  REQUIRE(index.Newest("a").has_value());
  REQUIRE(index.Newest("a")->cached.has_value());
  CHECK(index.Newest("a")->cached->value() == std::string(10, 'a'));
  CHECK_FALSE(index.Newest("c")->cached.has_value());

  // A newer put replaces the cached value; a deletion frees it, and then the
  // next put fits.
  RecordPut(index, "a", 5, 0, std::string(10, 'A'));
  CHECK(index.Newest("a")->cached->value() == std::string(10, 'A'));
  CHECK(index.Newest("a")->cached->mod_revision() == 5);
  RecordDelete(index, "b", 6);
  CHECK(index.value_cache_bytes() == 96 + 10);
  CHECK_FALSE(index.Newest("b")->cached.has_value());
  RecordPut(index, "c", 7, 0, std::string(10, 'C'));
  CHECK(index.Newest("c")->cached->value() == std::string(10, 'C'));

  // Reads at the newest revision get the cached value; older reads do not.
  std::vector<KeyIndex::Visible> visible;
  REQUIRE(index.VisibleAt("a", "", 7, &visible).ok());
  REQUIRE(visible.size() == 1);
  CHECK(visible[0].cached.has_value());
  visible.clear();
  REQUIRE(index.VisibleAt("a", "", 4, &visible).ok());
  REQUIRE(visible.size() == 1);
  CHECK(visible[0].change.revision == 2);
  CHECK_FALSE(visible[0].cached.has_value());

  // NewestInto fills in the cached key-value of a newest put, and leaves
  // the message alone for an uncached put, a deletion or an unknown key.
  mvccpb::KeyValue newest;
  bool from_cache = false;
  std::optional<KeyIndex::Change> change =
      index.NewestInto("c", &newest, &from_cache);
  REQUIRE(change.has_value());
  CHECK(change->revision == 7);
  CHECK(from_cache);
  CHECK(newest.value() == std::string(10, 'C'));
  CHECK(newest.mod_revision() == 7);
  CHECK(newest.key().empty());
  mvccpb::KeyValue untouched;
  untouched.set_value("kept");
  change = index.NewestInto("b", &untouched, &from_cache);
  REQUIRE(change.has_value());
  CHECK(change->deleted);
  CHECK_FALSE(from_cache);
  CHECK(untouched.value() == "kept");
  CHECK_FALSE(index.NewestInto("z", &untouched, &from_cache).has_value());
  CHECK_FALSE(from_cache);

  // TakeNewest hands the writer the cached key-value itself: the key is
  // uncached (and its bytes freed) until the writer records the next change.
  mvccpb::KeyValue taken;
  change = index.TakeNewest("c", &taken, &from_cache);
  REQUIRE(change.has_value());
  CHECK(change->revision == 7);
  CHECK(from_cache);
  CHECK(taken.value() == std::string(10, 'C'));
  CHECK(taken.mod_revision() == 7);
  CHECK_FALSE(index.Newest("c")->cached.has_value());
  CHECK(index.value_cache_bytes() == 96 + 10);
  RecordPut(index, "c", 8, 0, std::string(10, 'D'));
  CHECK(index.Newest("c")->cached->value() == std::string(10, 'D'));
  CHECK(index.value_cache_bytes() == 2 * (96 + 10));
  untouched.set_value("kept");
  change = index.TakeNewest("b", &untouched, &from_cache);
  REQUIRE(change.has_value());
  CHECK(change->deleted);
  CHECK_FALSE(from_cache);
  CHECK(untouched.value() == "kept");

  // A cache of 0 bytes holds nothing. Compaction drops deleted keys and
  // keeps the cached values of the others.
  KeyIndex uncached(0);
  RecordPut(uncached, "a", 2);
  CHECK_FALSE(uncached.Newest("a")->cached.has_value());
  CHECK(uncached.value_cache_bytes() == 0);
  RecordDelete(index, "c", 9);
  index.Prune(9);
  CHECK(index.value_cache_bytes() == 96 + 10);
  CHECK(index.key_count() == 1);
}

TEST_CASE(
    "key index: ranges list keys in byte order, whatever bytes and lengths "
    "they share",
    "[statemachine][mvcc]") {
  // Keys from a few bytes (zero, and bytes on both sides of 0x80, where
  // signed and unsigned comparisons disagree), 0-12 bytes long: many share
  // their first 8 bytes, are prefixes of each other, or differ only past
  // byte 8.
  std::mt19937_64 random(20261202);
  const std::string alphabet("\0a\x7f\x80\xff", 5);
  auto random_key = [&] {
    std::string key(std::uniform_int_distribution<size_t>(0, 12)(random), '\0');
    for (char& c : key) {
      c = alphabet[std::uniform_int_distribution<size_t>(0, 4)(random)];
    }
    return key;
  };
  KeyIndex index;
  std::map<std::string, int64_t> model;  // key -> newest put's revision
  int64_t revision = 1;
  for (int i = 0; i < 3000; ++i) {
    const std::string key = random_key();
    RecordPut(index, key, ++revision);
    model[key] = revision;
  }
  // etcd's [key, range_end), with "\0" for every key from `key` on.
  auto model_range = [&](const std::string& key, const std::string& end) {
    std::vector<std::string> out;
    const bool to_end = end == kAll;
    if (!to_end && end <= key) return out;
    for (auto it = model.lower_bound(key);
         it != model.end() && (to_end || it->first < end); ++it) {
      out.push_back(it->first + "@" + std::to_string(it->second));
    }
    return out;
  };
  REQUIRE(At(index, "", kAll, revision) == model_range("", kAll));
  for (int i = 0; i < 1000; ++i) {
    const std::string key = random_key();
    std::string end = random_key();
    if (end.empty()) end = kAll;
    INFO("range [" << key.size() << " bytes, " << end.size() << " bytes)");
    CHECK(At(index, key, end, revision) == model_range(key, end));
  }
}

}  // namespace
}  // namespace driftwood::mvcc
