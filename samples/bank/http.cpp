// `bank serve`: the bank's routes on an annals::http_server. See http.hpp for the routes.
#include "http.hpp"
#include "idempotency.hpp"

#include "account.hpp"
#include "cli.hpp"
#include "projections.hpp"
#include "transfers.hpp"

#include <annals/http.hpp>
#include <annals/json.hpp>
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <pthread.h>
#include <variant>

namespace bank {
extern const char* const dashboard_html;  // generated from dashboard.html (CMake)
}

namespace bank::cli {
namespace {

using annals::http_request;
using annals::http_response;

// ---- JSON ------------------------------------------------------------------------------------

std::string json_string(std::string_view s) { return annals::json_quote(s); }

// A request body: one flat JSON object whose values are strings or numbers (kept as their
// text). Strict: no duplicate keys, no nesting, no trailing bytes, valid UTF-8.
struct json_number {
  std::string text;
};
using json_value = std::variant<std::string, json_number>;
using json_object = std::map<std::string, json_value, std::less<>>;

class flat_json_parser {
 public:
  explicit flat_json_parser(std::string_view s) : s_(s) {}

  annals::result<json_object> parse() {
    if (!annals::is_valid_utf8(s_)) return fail("the body is not valid UTF-8");
    json_object out;
    ws();
    if (!eat('{')) return fail("the body must be a JSON object");
    ws();
    if (!eat('}')) {
      for (;;) {
        ws();
        auto key = string();
        if (!key) return key.error();
        ws();
        if (!eat(':')) return fail("expected ':' after a key");
        ws();
        json_value v;
        if (peek() == '"') {
          auto str = string();
          if (!str) return str.error();
          v = std::move(*str);
        } else if (peek() == '-' || (peek() >= '0' && peek() <= '9')) {
          v = json_number{number()};
        } else {
          return fail(fmt::format("the value of '{}' must be a string or a number", *key));
        }
        if (!out.emplace(*key, std::move(v)).second) {
          return fail(fmt::format("duplicate key '{}'", *key));
        }
        ws();
        if (eat(',')) continue;
        if (eat('}')) break;
        return fail("expected ',' or '}'");
      }
    }
    ws();
    if (i_ != s_.size()) return fail("unexpected bytes after the JSON object");
    return out;
  }

 private:
  static annals::error fail(std::string why) {
    return annals::error(annals::errc::invalid_argument, "malformed JSON: " + std::move(why));
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  bool eat(char c) {
    if (peek() != c || i_ >= s_.size()) return false;
    ++i_;
    return true;
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  std::string number() {
    std::size_t start = i_;
    while (i_ < s_.size() && std::string_view("+-0123456789.eE").find(s_[i_]) != std::string_view::npos)
      ++i_;
    return std::string(s_.substr(start, i_ - start));
  }
  annals::result<std::string> string() {
    if (!eat('"')) return fail("expected a string");
    std::string out;
    for (;;) {
      if (i_ >= s_.size()) return fail("unterminated string");
      unsigned char c = static_cast<unsigned char>(s_[i_++]);
      if (c == '"') return out;
      if (c < 0x20) return fail("control character in a string");
      if (c != '\\') {
        out += static_cast<char>(c);
        continue;
      }
      if (i_ >= s_.size()) return fail("unterminated escape");
      char e = s_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          auto cp = hex4();
          if (!cp) return cp.error();
          std::uint32_t code = *cp;
          if (code >= 0xD800 && code <= 0xDBFF) {
            if (!eat('\\') || !eat('u')) return fail("unpaired surrogate");
            auto lo = hex4();
            if (!lo) return lo.error();
            if (*lo < 0xDC00 || *lo > 0xDFFF) return fail("unpaired surrogate");
            code = 0x10000 + ((code - 0xD800) << 10) + (*lo - 0xDC00);
          } else if (code >= 0xDC00 && code <= 0xDFFF) {
            return fail("unpaired surrogate");
          }
          append_utf8(out, code);
          break;
        }
        default: return fail("invalid escape");
      }
    }
  }
  annals::result<std::uint32_t> hex4() {
    if (i_ + 4 > s_.size()) return fail("short \\u escape");
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else return fail("bad \\u escape");
    }
    return v;
  }
  static void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

// Checks that the object has only `allowed` keys.
annals::result<void> only_keys(const json_object& o, std::initializer_list<std::string_view> allowed) {
  for (const auto& [k, v] : o) {
    bool ok = false;
    for (auto a : allowed) ok = ok || k == a;
    if (!ok) return annals::error(annals::errc::invalid_argument, fmt::format("unknown field '{}'", k));
  }
  return {};
}

annals::result<std::string> required_string(const json_object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) {
    return annals::error(annals::errc::invalid_argument, fmt::format("'{}' is required", key));
  }
  if (auto* s = std::get_if<std::string>(&it->second)) return *s;
  return annals::error(annals::errc::invalid_argument, fmt::format("'{}' must be a string", key));
}

// {"amount": "12.50"} (a string or a number, at most two decimals) or {"amount_cents": 1250}.
annals::result<std::int64_t> amount_of(const json_object& o) {
  auto a = o.find("amount");
  auto c = o.find("amount_cents");
  if ((a == o.end()) == (c == o.end())) {
    return annals::error(annals::errc::invalid_argument,
                         "give exactly one of 'amount' (\"12.50\") and 'amount_cents' (1250)");
  }
  if (a != o.end()) {
    const std::string& text = std::holds_alternative<std::string>(a->second)
                                  ? std::get<std::string>(a->second)
                                  : std::get<json_number>(a->second).text;
    return parse_amount(text);
  }
  auto* n = std::get_if<json_number>(&c->second);
  std::int64_t cents = 0;
  if (n && !n->text.empty() && n->text[0] != '0') {
    const char* end = n->text.data() + n->text.size();
    auto [p, ec] = std::from_chars(n->text.data(), end, cents);
    if (ec == std::errc() && p == end && cents > 0) return cents;
  }
  return annals::error(annals::errc::invalid_argument,
                       "'amount_cents' must be a positive integer of at most 2^63-1");
}

// ---- Responses -------------------------------------------------------------------------------

http_response error_response(const annals::error& e, bool conditional = false) {
  switch (e.kind()) {
    case annals::errc::invalid_argument: return http_response::error(400, e.message());
    case annals::errc::not_found: return http_response::error(404, e.message());
    case annals::errc::rejected: return http_response::error(422, e.message());
    case annals::errc::concurrency_conflict:
      return conditional
                 ? http_response::error(412, "the account changed: its version is not If-Match's")
                 : http_response::error(409, "concurrent commands kept conflicting; try again");
    case annals::errc::busy:
    case annals::errc::timed_out: return http_response::error(503, "the store is busy; try again");
    case annals::errc::read_only: return http_response::error(403, "the store is read-only");
    default: return http_response::error(500, "storage error");
  }
}

void add_header(http_response& r, std::string key, std::string value) {
  r.headers.push_back(annals::header{std::move(key), std::move(value)});
}

// ---- The service -----------------------------------------------------------------------------

// What the Idempotency-Key protocol hands a command route.
struct command_context {
  // The id the command's first event gets (further ones derive from it); empty: the store's.
  std::string event_id;
  // The command already happened (a request with this key appended `event_id` before it
  // died): answer from this event, appending nothing.
  std::optional<annals::recorded_event> done;

  // Event ids for command_options::event_ids (none when event_id is empty).
  std::function<std::string(std::size_t)> event_ids() const {
    if (event_id.empty()) return {};
    return [id = event_id](std::size_t i) {
      return i == 0 ? id : annals::derived_event_id(id, std::to_string(i));
    };
  }
};

struct service {
  annals::event_store& store;
  annals::projection_runner& models;
  idempotency_keys& keys;
  int max_retries = 10;

  using command_route = std::function<http_response(const command_context&)>;

  // Runs a command route: the Idempotency-Key protocol around `run`.
  http_response idempotent(const http_request& r, const command_route& run) {
    auto key = r.header("Idempotency-Key");
    if (!key) return run(command_context{});
    if (key->empty() || key->size() > 200) {
      return http_response::error(400, "Idempotency-Key must be 1 to 200 characters");
    }
    for (unsigned char ch : *key) {
      if (ch < 0x21 || ch > 0x7e) {
        return http_response::error(400, "Idempotency-Key must be printable ASCII");
      }
    }
    std::string request = r.method + " " + r.path + "\n" + r.header("If-Match").value_or("") +
                          "\n" + r.body;
    auto c = keys.take(*key, request);
    switch (c.kind) {
      case idempotency_keys::claim_kind::replay: return c.response;
      case idempotency_keys::claim_kind::different_request:
        return http_response::error(422,
                                    "this Idempotency-Key was used for a different request");
      case idempotency_keys::claim_kind::in_progress:
        return http_response::error(409, "a request with this Idempotency-Key is in progress");
      case idempotency_keys::claim_kind::failed:
        fmt::print(stderr, "bank serve: cannot record an Idempotency-Key: {}\n", c.error);
        return http_response::error(503, "cannot record the Idempotency-Key; try again");
      case idempotency_keys::claim_kind::claimed:
      case idempotency_keys::claim_kind::taken_over: break;
    }
    command_context ctx{c.event_id, std::nullopt};
    http_response out;
    try {
      // A taken-over key's request may have appended its event before its server died.
      if (c.kind == idempotency_keys::claim_kind::taken_over) ctx.done = find(ctx.event_id);
      out = run(ctx);
      // A failure after this key's event is stored (another holder of the key appended it
      // while this request ran: its claim had gone stale) is that event's success.
      if (!ctx.done && (out.status < 200 || out.status > 299)) {
        if (auto done = find(ctx.event_id)) {
          ctx.done = std::move(done);
          out = run(ctx);
        }
      }
    } catch (...) {
      (void)keys.finish(*key, c.token, http_response::error(500, "internal error"));
      throw;
    }
    if (!keys.finish(*key, c.token, out)) {
      fmt::print(stderr,
                 "bank serve: the response to Idempotency-Key '{}' was not recorded (the key was "
                 "taken over while the request ran, or the database failed)\n",
                 *key);
    }
    return out;
  }

  // The stored event `event_id`, if any. Throws when the store cannot say (the caller answers
  // 500 and releases the claim).
  std::optional<annals::recorded_event> find(const std::string& event_id) {
    auto e = store.find_event(event_id);
    if (!e) throw std::runtime_error("cannot look up an event id: " + e.error().message());
    return std::move(*e);
  }

  // Runs `decide` on the account `id`, honouring If-Match, then answers with the account.
  // When the command already happened (ctx.done) it answers from that event: its version and
  // position, the account as it is now.
  template <class Decide>
  http_response account_command(const http_request& r, const command_context& ctx,
                                const std::string& id, int ok_status, Decide&& decide) {
    auto stream = account_stream_of(id);
    if (!stream) return error_response(stream.error());
    std::optional<std::int64_t> if_match;
    if (auto h = r.header("If-Match")) {
      auto v = parse_etag(*h);
      if (!v) return error_response(v.error());
      if_match = *v;
    }
    if (ctx.done) {
      if (ctx.done->stream_id != *stream) return http_response::error(500, "internal error");
      return account_answer(id, ok_status, ctx.done->stream_version, ctx.done->position);
    }
    annals::command_options o;
    o.max_retries = if_match ? 0 : max_retries;
    o.traceparent = r.traceparent;
    o.event_ids = ctx.event_ids();
    bool precondition_failed = false;
    bool missing = false;
    auto result = annals::handle<account>(
        store, *stream,
        [&](const account& a) -> annals::decision<account> {
          if (if_match) {
            // handle() loaded `a` just now: a version read after it is at least as new, and if
            // it is newer the append below (at the loaded version, no retries) conflicts.
            auto v = store.stream_version(*stream);
            if (!v || *v != *if_match) {
              precondition_failed = true;
              return annals::decision<account>::reject("precondition");
            }
          }
          auto d = decide(a);
          if (d.rejected() && !a.opened && ok_status != 201) missing = true;
          return d;
        },
        o);
    if (!result) {
      if (precondition_failed) {
        return http_response::error(412, "the account's version is not the one If-Match gives");
      }
      if (missing) {
        return http_response::error(404, fmt::format("account '{}' does not exist", id));
      }
      return error_response(result.error(), if_match.has_value());
    }
    return account_answer(id, ok_status, result->stream_version, result->position);
  }

  // A command's answer: the account after the event at (version, position).
  http_response account_answer(const std::string& id, int ok_status, std::int64_t version,
                               std::int64_t position) {
    // Read-your-writes: the read models served here have the command before we answer.
    for (std::string_view model : {account_balances::name, account_statement::name}) {
      (void)models.wait_for(model, position, std::chrono::seconds(2));
    }
    http_response out = http_response::json(ok_status, account_json(id, version, position));
    add_header(out, "ETag", fmt::format("\"{}\"", version));
    add_header(out, "Location", "/accounts/" + id);
    return out;
  }

  static annals::result<std::int64_t> parse_etag(std::string text) {
    if (text.size() >= 2 && text.front() == '"' && text.back() == '"') {
      text = text.substr(1, text.size() - 2);
    }
    if (text.empty() || text.size() > 18 || text.find_first_not_of("0123456789") != std::string::npos) {
      return annals::error(annals::errc::invalid_argument,
                           "If-Match must be an account version in quotes, e.g. \"3\"");
    }
    return std::stoll(text);
  }

  static annals::result<std::string> account_stream_of(const std::string& id) {
    if (auto ok = validate_account_id(id); !ok) return ok.error();
    return stream_for(id);
  }

  // The account as JSON from the read model; version and position from a command (or -1/0:
  // derived from the row).
  std::string account_json(const std::string& id, std::int64_t version = -1,
                           std::int64_t position = 0) {
    auto row = find_balance(models, id);
    if (!row || !*row) {
      return fmt::format("{{\"id\":{},\"version\":{},\"position\":{}}}", json_string(id), version,
                         position);
    }
    return row_json(**row, version, position);
  }

  static std::string row_json(const balance_row& b, std::int64_t version = -1,
                              std::int64_t position = 0) {
    // The row's own version: opened (0), one per deposit or withdrawal, one for the close.
    if (version < 0) version = b.transaction_count + (b.closed ? 1 : 0);
    std::string out = fmt::format(
        "{{\"id\":{},\"owner\":{},\"balance_cents\":{},\"balance\":{},\"closed\":{},"
        "\"version\":{}",
        json_string(b.account_id), json_string(b.owner), b.balance_cents,
        json_string(format_cents(b.balance_cents)), b.closed ? "true" : "false", version);
    if (position > 0) out += fmt::format(",\"position\":{}", position);
    return out + "}";
  }

  http_response get_account(const http_request& r) {
    std::string id = r.param("id");
    if (auto ok = validate_account_id(id); !ok) return error_response(ok.error());
    auto row = find_balance(models, id);
    if (!row) return error_response(row.error());
    if (!*row) return http_response::error(404, fmt::format("account '{}' does not exist", id));
    auto out = http_response::json(200, row_json(**row));
    add_header(out, "ETag", fmt::format("\"{}\"", (*row)->transaction_count + ((*row)->closed ? 1 : 0)));
    return out;
  }

  http_response list_accounts(const http_request&) {
    std::string body = "{\"accounts\":[";
    bool first = true;
    auto n = read_balances(models, [&](const balance_row& b) {
      if (!first) body += ",";
      first = false;
      body += row_json(b);
      return true;
    });
    if (!n) return error_response(n.error());
    return http_response::json(200, body + "]}");
  }

  http_response statement(const http_request& r) {
    std::string id = r.param("id");
    if (auto ok = validate_account_id(id); !ok) return error_response(ok.error());
    auto row = find_balance(models, id);
    if (!row) return error_response(row.error());
    if (!*row) return http_response::error(404, fmt::format("account '{}' does not exist", id));
    std::string body = row_json(**row);
    body.pop_back();
    body += ",\"movements\":[";
    bool first = true;
    auto n = read_statement(models, id, [&](const statement_row& s) {
      if (!first) body += ",";
      first = false;
      body += fmt::format(
          "{{\"version\":{},\"recorded_at_us\":{},\"kind\":{},\"amount_cents\":{},"
          "\"amount\":{},\"balance_after_cents\":{},\"memo\":{}}}",
          s.stream_version, s.recorded_at_us, json_string(s.kind), s.amount_cents,
          json_string(format_cents(s.amount_cents)), s.balance_after_cents, json_string(s.memo));
      return true;
    });
    if (!n) return error_response(n.error());
    return http_response::json(200, body + "]}");
  }

  http_response open_account(const http_request& r, const command_context& ctx) {
    auto o = flat_json_parser(r.body).parse();
    if (!o) return error_response(o.error());
    if (auto ok = only_keys(*o, {"id", "owner"}); !ok) return error_response(ok.error());
    auto id = required_string(*o, "id");
    if (!id) return error_response(id.error());
    auto owner = required_string(*o, "owner");
    if (!owner) return error_response(owner.error());
    if (owner->empty() || owner->size() > 200) {
      return http_response::error(400, "'owner' must be 1 to 200 bytes");
    }
    for (unsigned char ch : *owner) {
      if (ch < 0x20 || ch == 0x7f) {
        return http_response::error(400, "'owner' contains a control character");
      }
    }
    return account_command(r, ctx, *id, 201,
                           [&](const account& a) { return bank::open(a, *id, *owner); });
  }

  template <class Decider>
  http_response money(const http_request& r, const command_context& ctx, Decider decider) {
    std::string id = r.param("id");
    auto o = flat_json_parser(r.body).parse();
    if (!o) return error_response(o.error());
    if (auto ok = only_keys(*o, {"amount", "amount_cents"}); !ok) return error_response(ok.error());
    auto cents = amount_of(*o);
    if (!cents) return error_response(cents.error());
    return account_command(r, ctx, id, 200,
                           [&](const account& a) { return decider(a, id, *cents); });
  }

  http_response request_transfer(const http_request& r, const command_context& ctx) {
    auto o = flat_json_parser(r.body).parse();
    if (!o) return error_response(o.error());
    if (auto ok = only_keys(*o, {"id", "from", "to", "amount", "amount_cents"}); !ok) {
      return error_response(ok.error());
    }
    auto from = required_string(*o, "from");
    if (!from) return error_response(from.error());
    auto to = required_string(*o, "to");
    if (!to) return error_response(to.error());
    auto cents = amount_of(*o);
    if (!cents) return error_response(cents.error());
    std::string id = annals::new_uuid_v7();
    if (o->count("id")) {
      auto given = required_string(*o, "id");
      if (!given) return error_response(given.error());
      id = *given;
    }
    if (auto ok = validate_transfer_id(id); !ok) return error_response(ok.error());
    if (auto ok = validate_account_id(*from); !ok) return error_response(ok.error());
    if (auto ok = validate_account_id(*to); !ok) return error_response(ok.error());
    std::int64_t position = 0;
    if (ctx.done) {
      // Without an "id" the first attempt chose one: the event's stream says which.
      if (!o->count("id")) id = transfer_id_of(ctx.done->stream_id);
      if (ctx.done->stream_id != transfer_stream(id)) {
        return http_response::error(500, "internal error");
      }
      position = ctx.done->position;
    } else {
      annals::command_options opts;
      opts.max_retries = max_retries;
      opts.traceparent = r.traceparent;
      opts.event_ids = ctx.event_ids();
      auto res = annals::handle<transfer>(
          store, transfer_stream(id),
          [&](const transfer& t) { return request(t, id, *from, *to, *cents); }, opts);
      if (!res) return error_response(res.error());
      position = res->position;
    }
    auto out = http_response::json(
        202, fmt::format("{{\"id\":{},\"from\":{},\"to\":{},\"amount_cents\":{},\"amount\":{},"
                         "\"state\":\"requested\",\"position\":{}}}",
                         json_string(id), json_string(*from), json_string(*to), *cents,
                         json_string(format_cents(*cents)), position));
    add_header(out, "Location", "/transfers/" + id);
    return out;
  }

  http_response get_transfer(const http_request& r) {
    std::string id = r.param("id");
    if (auto ok = validate_transfer_id(id); !ok) return error_response(ok.error());
    auto t = load_transfer(store, id);
    if (!t) return error_response(t.error());
    if (t->state == transfer_state::none) {
      return http_response::error(404, fmt::format("transfer '{}' does not exist", id));
    }
    return http_response::json(
        200, fmt::format("{{\"id\":{},\"from\":{},\"to\":{},\"amount_cents\":{},\"state\":{},"
                         "\"reason\":{},\"refunded\":{}}}",
                         json_string(t->id), json_string(t->from), json_string(t->to),
                         t->amount_cents, json_string(to_string(t->state)),
                         json_string(t->reason), t->refunded ? "true" : "false"));
  }
};

struct serve_args {
  int port = 8080;
  std::string bind = "127.0.0.1";
  std::string token;
  bool no_saga = false;
  // How old an Idempotency-Key's claim must be before another request may take it over (its
  // server presumably died mid-request). Longer than any request takes.
  int idempotency_timeout_s = 30;
};

int serve(const std::string& db, int max_retries, const serve_args& a) {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // Opened once (creating a new store: `bank serve` may start empty); the read models, the
  // saga, the idempotency keys and the HTTP server are all built on this handle.
  auto opened = bank::open_store(db);
  if (!opened) return report(opened.error());
  std::shared_ptr<annals::event_store> store = std::move(opened).value();
  auto models = open_read_models(store);
  if (!models) return report(models.error());
  if (auto ok = (*models)->start(); !ok) return report(ok.error());

  std::unique_ptr<annals::subscription> saga;
  if (!a.no_saga) {
    annals::command_options base;
    base.max_retries = max_retries;
    auto s = open_transfer_saga(store, *store, transfer_saga_options(), base);
    if (!s) return report(s.error());
    if (auto ok = (*s)->start(); !ok) return report(ok.error());
    saga = std::move(*s);
  }

  auto keys = idempotency_keys::open(store, std::chrono::seconds(a.idempotency_timeout_s));
  if (!keys) return report(keys.error());

  annals::http_options o;
  o.bind_address = a.bind;
  o.port = a.port;
  o.write_token = a.token;
  auto server = annals::http_server::open(store, o);
  if (!server) return report(server.error());
  auto& srv = **server;

  service svc{*store, **models, **keys, max_retries};
  srv.route("GET", "/accounts", [&](const http_request& r) { return svc.list_accounts(r); });
  srv.route("GET", "/accounts/{id}", [&](const http_request& r) { return svc.get_account(r); });
  srv.route("GET", "/accounts/{id}/statement",
            [&](const http_request& r) { return svc.statement(r); });
  srv.route("GET", "/transfers/{id}", [&](const http_request& r) { return svc.get_transfer(r); });
  srv.route(
      "POST", "/accounts",
      [&](const http_request& r) {
        return svc.idempotent(r, [&](const command_context& c) { return svc.open_account(r, c); });
      },
      true);
  srv.route(
      "POST", "/accounts/{id}/deposits",
      [&](const http_request& r) {
        return svc.idempotent(
            r, [&](const command_context& c) { return svc.money(r, c, &bank::deposit); });
      },
      true);
  srv.route(
      "POST", "/accounts/{id}/withdrawals",
      [&](const http_request& r) {
        return svc.idempotent(
            r, [&](const command_context& c) { return svc.money(r, c, &bank::withdraw); });
      },
      true);
  srv.route(
      "POST", "/transfers",
      [&](const http_request& r) {
        return svc.idempotent(
            r, [&](const command_context& c) { return svc.request_transfer(r, c); });
      },
      true);
  srv.static_content("/", "text/html; charset=utf-8", dashboard_html);

  if (auto ok = srv.start(); !ok) return report(ok.error());
  std::string host = a.bind.find(':') != std::string::npos ? "[" + a.bind + "]" : a.bind;
  // Tests and scripts read this line to find a --port 0 server.
  fmt::print("bank serve: listening on http://{}:{}/\n", host, srv.port());
  fmt::print(stderr, "bank serve: commands are {}; stop with Ctrl-C\n",
             a.token.empty() ? "off (no --token)" : "on (Authorization: Bearer <token>)");
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop_signals, &sig);
  srv.stop();
  if (saga) saga->stop();
  (*models)->stop();
  return 0;
}

}  // namespace

void add_http_commands(CLI::App& app, const std::string& db, const int& max_retries, int& code) {
  auto args = std::make_shared<serve_args>();
  auto* cmd = app.add_subcommand(
      "serve", "Serve the bank over HTTP: accounts, commands (with --token), the framework's "
               "event routes and a live dashboard at /");
  cmd->add_option("--port", args->port, "TCP port (0: any free port, printed)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--bind", args->bind, "Address to listen on")->capture_default_str();
  cmd->add_option("--token", args->token,
                  "Bearer token for the command routes (none: commands answer 403)");
  cmd->add_flag("--no-saga", args->no_saga,
                "Do not run the transfer process manager in this process");
  cmd->add_option("--idempotency-timeout", args->idempotency_timeout_s,
                  "Seconds after which a request left in progress under an Idempotency-Key "
                  "(its server died) may be taken over by a retry; longer than any request")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  cmd->callback([&, args] { code = serve(db, max_retries, *args); });
}

}  // namespace bank::cli
