#include "tests/support/power_loss_file_system.h"

#include "absl/strings/str_cat.h"

namespace driftwood::testing {

namespace fs = std::filesystem;

PowerLossFileSystem::PowerLossFileSystem() {
  inodes_.push_back(Inode{.is_dir = true});
}

absl::Status PowerLossFileSystem::PowerCheck() const {
  if (mutations_ >= power_off_at_) {
    return absl::UnavailableError("power is off");
  }
  return absl::OkStatus();
}

absl::Status PowerLossFileSystem::Mutate() {
  if (absl::Status status = PowerCheck(); !status.ok()) return status;
  ++mutations_;
  return absl::OkStatus();
}

size_t PowerLossFileSystem::Lookup(const fs::path& path) const {
  size_t inode = 0;
  for (const fs::path& part : path.relative_path()) {
    if (part.empty() || part == ".") continue;
    if (!inodes_[inode].is_dir) return kNone;
    auto it = inodes_[inode].entries.find(part.string());
    if (it == inodes_[inode].entries.end()) return kNone;
    inode = it->second;
  }
  return inode;
}

absl::Status PowerLossFileSystem::Parent(const fs::path& path, size_t* parent,
                                         std::string* name) const {
  *parent = Lookup(path.parent_path());
  *name = path.filename().string();
  if (*parent == kNone || !inodes_[*parent].is_dir || name->empty()) {
    return absl::NotFoundError(absl::StrCat("no folder for ", path.string()));
  }
  return absl::OkStatus();
}

absl::Status PowerLossFileSystem::CreateDirs(const fs::path& path) {
  if (absl::Status status = Mutate(); !status.ok()) return status;
  size_t inode = 0;
  for (const fs::path& part : path.relative_path()) {
    if (part.empty() || part == ".") continue;
    auto it = inodes_[inode].entries.find(part.string());
    if (it != inodes_[inode].entries.end()) {
      if (!inodes_[it->second].is_dir) {
        return absl::FailedPreconditionError(
            absl::StrCat(path.string(), ": a file is in the way"));
      }
      inode = it->second;
      continue;
    }
    inodes_.push_back(Inode{.is_dir = true});
    const size_t created = inodes_.size() - 1;
    inodes_[inode].entries[part.string()] = created;
    inode = created;
  }
  return absl::OkStatus();
}

absl::Status PowerLossFileSystem::WriteFile(const fs::path& path,
                                            std::string_view contents) {
  if (absl::Status status = Mutate(); !status.ok()) return status;
  size_t parent = kNone;
  std::string name;
  if (absl::Status status = Parent(path, &parent, &name); !status.ok()) {
    return status;
  }
  auto it = inodes_[parent].entries.find(name);
  if (it != inodes_[parent].entries.end()) {
    if (inodes_[it->second].is_dir) {
      return absl::FailedPreconditionError(
          absl::StrCat(path.string(), " is a folder"));
    }
    inodes_[it->second].data = std::string(contents);  // O_TRUNC: same inode
    return absl::OkStatus();
  }
  inodes_.push_back(Inode{.data = std::string(contents)});
  inodes_[parent].entries[name] = inodes_.size() - 1;
  return absl::OkStatus();
}

absl::Status PowerLossFileSystem::ReadFile(
    const fs::path& path,
    const std::function<void(std::string_view)>& consume) const {
  if (absl::Status status = PowerCheck(); !status.ok()) return status;
  const size_t inode = Lookup(path);
  if (inode == kNone) return absl::NotFoundError(path.string());
  if (inodes_[inode].is_dir) {
    return absl::FailedPreconditionError(
        absl::StrCat(path.string(), " is a folder"));
  }
  const std::string& data = inodes_[inode].data;
  // Several chunks, as a real read loop would deliver them.
  for (size_t offset = 0; offset < data.size(); offset += 4096) {
    consume(std::string_view(data).substr(offset, 4096));
  }
  return absl::OkStatus();
}

absl::Status PowerLossFileSystem::SyncFile(const fs::path& path) {
  if (absl::Status status = Mutate(); !status.ok()) return status;
  const size_t inode = Lookup(path);
  if (inode == kNone) return absl::NotFoundError(path.string());
  inodes_[inode].synced_data = inodes_[inode].data;
  return absl::OkStatus();
}

absl::Status PowerLossFileSystem::SyncDir(const fs::path& path) {
  if (absl::Status status = Mutate(); !status.ok()) return status;
  const size_t inode = Lookup(path);
  if (inode == kNone || !inodes_[inode].is_dir) {
    return absl::NotFoundError(path.string());
  }
  inodes_[inode].synced_entries = inodes_[inode].entries;
  return absl::OkStatus();
}

absl::Status PowerLossFileSystem::Rename(const fs::path& from,
                                         const fs::path& to) {
  if (absl::Status status = Mutate(); !status.ok()) return status;
  size_t from_parent = kNone, to_parent = kNone;
  std::string from_name, to_name;
  if (absl::Status status = Parent(from, &from_parent, &from_name);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = Parent(to, &to_parent, &to_name); !status.ok()) {
    return status;
  }
  auto it = inodes_[from_parent].entries.find(from_name);
  if (it == inodes_[from_parent].entries.end()) {
    return absl::NotFoundError(from.string());
  }
  const size_t moving = it->second;
  auto target = inodes_[to_parent].entries.find(to_name);
  if (target != inodes_[to_parent].entries.end() &&
      inodes_[target->second].is_dir &&
      !inodes_[target->second].entries.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(to.string(), " is a folder that is not empty"));
  }
  inodes_[from_parent].entries.erase(it);
  inodes_[to_parent].entries[to_name] = moving;
  return absl::OkStatus();
}

absl::Status PowerLossFileSystem::RemoveAll(const fs::path& path) {
  if (absl::Status status = Mutate(); !status.ok()) return status;
  size_t parent = kNone;
  std::string name;
  if (!Parent(path, &parent, &name).ok()) return absl::OkStatus();
  inodes_[parent].entries.erase(name);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<raft::DirEntry>> PowerLossFileSystem::List(
    const fs::path& path) const {
  if (absl::Status status = PowerCheck(); !status.ok()) return status;
  const size_t inode = Lookup(path);
  if (inode == kNone || !inodes_[inode].is_dir) {
    return absl::NotFoundError(path.string());
  }
  std::vector<raft::DirEntry> entries;
  for (const auto& [name, child] : inodes_[inode].entries) {
    entries.push_back({name, inodes_[child].is_dir});
  }
  return entries;
}

void PowerLossFileSystem::CutPowerAfter(uint64_t operations) {
  power_off_at_ = mutations_ + operations;
}

void PowerLossFileSystem::PowerCycle() {
  // Only what the synced maps reach exists; each file holds its synced bytes.
  std::vector<size_t> pending = {0};
  std::vector<bool> seen(inodes_.size(), false);
  seen[0] = true;
  while (!pending.empty()) {
    const size_t inode = pending.back();
    pending.pop_back();
    Inode& node = inodes_[inode];
    node.data = node.synced_data;
    node.entries = node.synced_entries;
    for (const auto& [name, child] : node.entries) {
      if (!seen[child]) {
        seen[child] = true;
        pending.push_back(child);
      }
    }
  }
  power_off_at_ = std::numeric_limits<uint64_t>::max();
}

}  // namespace driftwood::testing
