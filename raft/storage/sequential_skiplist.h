// A RocksDB memtable representation for keys written mostly in increasing
// order: Raft log entries, which are appended, and the MVCC store's event
// records, which are appended before a few records rewritten with each batch.
//
// It is a skip list with one writer and lock-free readers, as RocksDB's
// default, with two differences:
// - An insert first tries the place of the previous insert: when the new key
//   falls between the previously inserted key and that key's successor, it
//   is linked there after two key comparisons, whatever the list's height.
//   Otherwise it is placed by a search from the top, as usual.
// - Its nodes live in its own arena (raft/storage/memtable_arena.h), whose
//   blocks are reused from one memtable to the next instead of faulted in
//   fresh; RocksDB learns the bytes it holds from ApproximateMemoryUsage.
// - It checks no invariants on the write path. Debian's RocksDB is built with
//   its assertions on, and its skip list then compares each new key with its
//   neighbours at every level after linking it (bench/README.md, eighteenth
//   and nineteenth sessions: most of an insert's 15-29 key comparisons).
//
// Contract (RocksDB's MemTableRep): one thread inserts at a time (the
// options must set allow_concurrent_memtable_write = false, which DB::Open
// enforces), any number read concurrently, and nodes are never removed until
// the memtable is destroyed. A key equal to one present is refused
// (InsertKey returns false, which RocksDB reports as an error).
#ifndef DRIFTWOOD_RAFT_STORAGE_SEQUENTIAL_SKIPLIST_H_
#define DRIFTWOOD_RAFT_STORAGE_SEQUENTIAL_SKIPLIST_H_

#include <cstdint>
#include <memory>

#include "rocksdb/memtablerep.h"

namespace driftwood::raft {

// The factory to set as rocksdb::Options::memtable_factory. Its name, which
// RocksDB records in the OPTIONS file, is "DriftwoodSequentialSkipList"; the
// memtable's layout never reaches disk, so a store written with RocksDB's
// default skip list opens with this one and the other way round.
std::shared_ptr<rocksdb::MemTableRepFactory> NewSequentialSkipListFactory();

// How many iterators allocated on the heap are alive (tests: point reads
// must not leave any behind).
int64_t SequentialSkipListHeapIteratorsForTesting();

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_STORAGE_SEQUENTIAL_SKIPLIST_H_
