// Helpers for the hostile-input suite: tools run as executables, raw SQLite, whole-store
// snapshots to compare after damage, and mounts that are always undone.
#pragma once

#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "store/backends.hpp"
#include "tool/tool_support.hpp"

namespace hostile {

using namespace annals;
using namespace annals::test;
using tool_test::contains;
using tool_test::read_file;
using tool_test::write_file;

// Runs an executable with `args` then `--db DB` (annals and bank both take it).
inline process_result run_on(const char* exe, const std::string& db,
                             std::vector<std::string> args) {
  args.insert(args.begin(), exe);
  args.push_back("--db");
  args.push_back(db);
  return run(args);
}
inline process_result annals_tool(const std::string& db, std::vector<std::string> args) {
  return run_on(ANNALS_EXE, db, std::move(args));
}

// Every event's stored fields, for comparing a store with what it held before.
struct event_row {
  std::int64_t position, version;
  std::string stream, id, type, payload;
  std::int64_t recorded_at;
  event_metadata metadata;
  bool operator==(const event_row&) const = default;
};
inline event_row row_of(const recorded_event& e) {
  return {e.position, e.stream_version, e.stream_id,      e.event_id,
          e.type,     e.payload,        e.recorded_at_us, e.metadata};
}
inline std::vector<event_row> rows_of(event_store& s) {
  std::vector<event_row> out;
  auto n = s.read_all({}, [&](const recorded_event& e) {
    out.push_back(row_of(e));
    return true;
  });
  if (!n) FAIL("read_all failed: " << describe(n));
  return out;
}

// Tests that need root (mounts, chattr) skip with a message when not permitted, and fail
// instead when ANNALS_REQUIRE_ROOT_TESTS=1 (tools/scripts/test.sh sets it: CI runs as root).
inline bool root_tests_required() {
  const char* v = std::getenv("ANNALS_REQUIRE_ROOT_TESTS");
  return v && *v && std::string(v) != "0";
}

// A mount made by the test, undone (lazily, so an open file cannot keep it) on destruction.
class scoped_mount {
 public:
  scoped_mount() = default;
  ~scoped_mount() { undo(); }
  scoped_mount(const scoped_mount&) = delete;
  scoped_mount& operator=(const scoped_mount&) = delete;
  // mount(2); false with `why` set when it failed.
  bool mount(const std::string& source, const std::string& target, const char* fstype,
             unsigned long flags, const std::string& data, std::string& why) {
    if (::mount(source.c_str(), target.c_str(), fstype, flags,
                data.empty() ? nullptr : data.c_str()) != 0) {
      why = std::string("mount ") + target + ": " + std::strerror(errno);
      return false;
    }
    target_ = target;
    return true;
  }
  // Makes an existing bind mount read-only.
  bool remount_read_only(std::string& why) {
    if (::mount("none", target_.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
      why = std::string("remount read-only: ") + std::strerror(errno);
      return false;
    }
    return true;
  }
  void undo() {
    if (target_.empty()) return;
    if (::umount2(target_.c_str(), 0) != 0) ::umount2(target_.c_str(), MNT_DETACH);
    target_.clear();
  }

 private:
  std::string target_;
};

// When a root-only step is not permitted: FAIL if root tests are required, else say "skipped".
// Returns true when the caller should stop (skip).
inline bool skip_without_root(const std::string& why) {
  if (root_tests_required()) {
    FAIL("ANNALS_REQUIRE_ROOT_TESTS is set but " << why);
  }
  MESSAGE(
      "skipped (needs root and mount permission; set ANNALS_REQUIRE_ROOT_TESTS=1 to make "
      "this a failure): "
      << why);
  return true;
}

// Decodes a JSON string value starting at s[at] == '"' (RFC 8259 escapes, \u surrogate pairs).
inline std::string json_string_at(const std::string& s, std::size_t at) {
  std::string out;
  REQUIRE(at < s.size());
  REQUIRE(s[at] == '"');
  auto put = [&](std::uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  };
  for (std::size_t i = at + 1; i < s.size(); ++i) {
    char c = s[i];
    if (c == '"') return out;
    if (c != '\\') {
      out += c;
      continue;
    }
    char e = s.at(++i);
    switch (e) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'u': {
        std::uint32_t cp = std::stoul(s.substr(i + 1, 4), nullptr, 16);
        i += 4;
        if (cp >= 0xd800 && cp < 0xdc00 && s.compare(i + 1, 2, "\\u") == 0) {
          std::uint32_t lo = std::stoul(s.substr(i + 3, 4), nullptr, 16);
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          i += 6;
        }
        put(cp);
        break;
      }
      default:
        out += e;
    }
  }
  FAIL("unterminated JSON string");
  return out;
}
// The value of the first `"key":"..."` in `json`, decoded.
inline std::string json_field(const std::string& json, const std::string& key) {
  auto at = json.find("\"" + key + "\":");
  REQUIRE_MESSAGE(at != std::string::npos, "no " << key << " in " << json.substr(0, 200));
  return json_string_at(json, at + key.size() + 3);
}

inline std::string percent_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_' || c == '.' || c == '~';
    if (plain) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

}  // namespace hostile
