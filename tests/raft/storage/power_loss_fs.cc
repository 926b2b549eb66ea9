#include "tests/raft/storage/power_loss_fs.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace driftwood::testing {

namespace fs = std::filesystem;

namespace {

std::string FolderOf(const std::string& name) {
  return fs::path(name).parent_path().string();
}

class TrackedFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  TrackedFile(std::unique_ptr<rocksdb::FSWritableFile> file, std::string name,
              PowerLossFs* fs)
      : FSWritableFileOwnerWrapper(std::move(file)),
        name_(std::move(name)),
        fs_(fs) {}

  rocksdb::IOStatus Append(const rocksdb::Slice& data,
                           const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
    if (auto s = fs_->OnAppend(name_, data.size()); !s.ok()) return s;
    return target()->Append(data, options, dbg);
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data,
                           const rocksdb::IOOptions& options,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    if (auto s = fs_->OnAppend(name_, data.size()); !s.ok()) return s;
    return target()->Append(data, options, info, dbg);
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice&, uint64_t,
                                     const rocksdb::IOOptions&,
                                     rocksdb::IODebugContext*) override {
    return rocksdb::IOStatus::NotSupported("PositionedAppend");
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice&, uint64_t,
                                     const rocksdb::IOOptions&,
                                     const rocksdb::DataVerificationInfo&,
                                     rocksdb::IODebugContext*) override {
    return rocksdb::IOStatus::NotSupported("PositionedAppend");
  }
  // Only the bytes appended before a sync starts are durable after it:
  // RocksDB may sync the write-ahead log on one thread while it appends on
  // another (IsSyncThreadSafe).
  rocksdb::IOStatus Sync(const rocksdb::IOOptions& options,
                         rocksdb::IODebugContext* dbg) override {
    const uint64_t size = fs_->SizeOf(name_);
    auto s = target()->Sync(options, dbg);
    if (s.ok()) fs_->OnSync(name_, size);
    return s;
  }
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    const uint64_t size = fs_->SizeOf(name_);
    auto s = target()->Fsync(options, dbg);
    if (s.ok()) fs_->OnSync(name_, size);
    return s;
  }
  rocksdb::IOStatus RangeSync(uint64_t, uint64_t, const rocksdb::IOOptions&,
                              rocksdb::IODebugContext*) override {
    // Syncing part of a file is not counted as durable here.
    return rocksdb::IOStatus::OK();
  }
  bool IsSyncThreadSafe() const override { return true; }

 private:
  std::string name_;
  PowerLossFs* fs_;
};

class TrackedFolder : public rocksdb::FSDirectoryWrapper {
 public:
  TrackedFolder(std::unique_ptr<rocksdb::FSDirectory> folder, std::string name,
                PowerLossFs* fs)
      : FSDirectoryWrapper(std::move(folder)),
        name_(std::move(name)),
        fs_(fs) {}

  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    auto s = FSDirectoryWrapper::Fsync(options, dbg);
    if (s.ok()) fs_->OnFolderSync(name_);
    return s;
  }
  rocksdb::IOStatus FsyncWithDirOptions(
      const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg,
      const rocksdb::DirFsyncOptions& dir_options) override {
    auto s = FSDirectoryWrapper::FsyncWithDirOptions(options, dbg, dir_options);
    if (s.ok()) fs_->OnFolderSync(name_);
    return s;
  }

 private:
  std::string name_;
  PowerLossFs* fs_;
};

}  // namespace

rocksdb::IOStatus PowerLossFs::NewWritableFile(
    const std::string& name, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result,
    rocksdb::IODebugContext* dbg) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (dead_) return rocksdb::IOStatus::IOError("power is off");
  }
  std::unique_ptr<rocksdb::FSWritableFile> file;
  auto s = target()->NewWritableFile(name, options, &file, dbg);
  if (!s.ok()) return s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = files_.find(name);
    // Re-creating an existing file truncates it; its entry stays durable.
    const bool existed = it != files_.end() ? it->second.entry_durable : false;
    files_[name] = FileState{0, 0, existed};
  }
  *result = std::make_unique<TrackedFile>(std::move(file), name, this);
  return s;
}

rocksdb::IOStatus PowerLossFs::ReopenWritableFile(
    const std::string& name, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result,
    rocksdb::IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSWritableFile> file;
  auto s = target()->ReopenWritableFile(name, options, &file, dbg);
  if (!s.ok()) return s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (files_.count(name) == 0) {
      std::error_code error;
      const uint64_t size = fs::file_size(name, error);
      files_[name] = FileState{size, size, true};
    }
  }
  *result = std::make_unique<TrackedFile>(std::move(file), name, this);
  return s;
}

rocksdb::IOStatus PowerLossFs::NewDirectory(
    const std::string& name, const rocksdb::IOOptions& options,
    std::unique_ptr<rocksdb::FSDirectory>* result,
    rocksdb::IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSDirectory> folder;
  auto s = target()->NewDirectory(name, options, &folder, dbg);
  if (!s.ok()) return s;
  *result = std::make_unique<TrackedFolder>(std::move(folder), name, this);
  return s;
}

rocksdb::IOStatus PowerLossFs::DeleteFile(const std::string& name,
                                          const rocksdb::IOOptions& options,
                                          rocksdb::IODebugContext* dbg) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    // A process without power deletes nothing (a closing DB must not tidy up
    // files the cut just made current again).
    if (dead_) return rocksdb::IOStatus::IOError("power is off");
    files_.erase(name);
  }
  return target()->DeleteFile(name, options, dbg);
}

rocksdb::IOStatus PowerLossFs::RenameFile(const std::string& source,
                                          const std::string& target_name,
                                          const rocksdb::IOOptions& options,
                                          rocksdb::IODebugContext* dbg) {
  Rename rename{source, target_name, std::nullopt};
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (dead_) return rocksdb::IOStatus::IOError("power is off");
  }
  if (fs::exists(target_name)) {
    std::ifstream in(target_name, std::ios::binary);
    std::stringstream content;
    content << in.rdbuf();
    rename.old_target_content = content.str();
  }
  auto s = target()->RenameFile(source, target_name, options, dbg);
  if (!s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(source);
  if (it != files_.end()) {
    files_[target_name] = it->second;
    files_.erase(it);
  }
  renames_.push_back(std::move(rename));
  return s;
}

rocksdb::IOStatus PowerLossFs::OnAppend(const std::string& name,
                                        uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (dead_) return rocksdb::IOStatus::IOError("power is off");
  files_[name].size += bytes;
  return rocksdb::IOStatus::OK();
}

uint64_t PowerLossFs::SizeOf(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  return files_[name].size;
}

void PowerLossFs::OnSync(const std::string& name, uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  if (dead_) return;
  ++syncs_;
  FileState& file = files_[name];
  file.synced = std::max(file.synced, size);
}

void PowerLossFs::OnFolderSync(const std::string& folder) {
  std::lock_guard<std::mutex> lock(mu_);
  if (dead_) return;
  for (auto& [name, state] : files_) {
    if (FolderOf(name) == folder) state.entry_durable = true;
  }
  std::vector<Rename> remaining;
  for (Rename& rename : renames_) {
    if (FolderOf(rename.target) != folder)
      remaining.push_back(std::move(rename));
  }
  renames_ = std::move(remaining);
}

void PowerLossFs::PowerCut() {
  std::lock_guard<std::mutex> lock(mu_);
  dead_ = true;
  std::error_code error;
  // Undo renames the folder never made durable, newest first.
  for (auto it = renames_.rbegin(); it != renames_.rend(); ++it) {
    fs::rename(it->target, it->source, error);
    if (it->old_target_content) {
      std::ofstream out(it->target, std::ios::binary | std::ios::trunc);
      out << *it->old_target_content;
    }
    auto file = files_.find(it->target);
    if (file != files_.end()) {
      files_[it->source] = file->second;
      files_.erase(file);
    }
  }
  renames_.clear();
  for (const auto& [name, state] : files_) {
    if (!state.entry_durable) {
      fs::remove(name, error);
    } else if (fs::exists(name, error) &&
               fs::file_size(name, error) > state.synced) {
      fs::resize_file(name, state.synced, error);
    }
  }
  files_.clear();
}

void PowerLossFs::Restore() {
  std::lock_guard<std::mutex> lock(mu_);
  dead_ = false;
  files_.clear();
  renames_.clear();
}

uint64_t PowerLossFs::syncs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return syncs_;
}

}  // namespace driftwood::testing
