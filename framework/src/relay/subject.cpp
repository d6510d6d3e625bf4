// The relay's subject scheme and header value encoding (no connection needed).
#include <annals/relay.hpp>

namespace annals {

namespace {

constexpr char hex_digits[] = "0123456789ABCDEF";

bool token_byte(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '-';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Bytes `keep` rejects become `mark` + two upper-case hex digits.
std::string escape(std::string_view text, bool (*keep)(unsigned char), char mark) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (keep(c)) {
      out += static_cast<char>(c);
    } else {
      out += mark;
      out += hex_digits[c >> 4];
      out += hex_digits[c & 15];
    }
  }
  return out;
}

bool header_byte(unsigned char c) { return c > 0x20 && c < 0x7f && c != '%'; }

}  // namespace

std::string subject_token(std::string_view text) {
  if (text.empty()) return "_";
  return escape(text, token_byte, '~');
}

namespace {

std::string category_of(std::string_view stream_id) {
  auto dash = stream_id.find('-');
  return std::string(dash == std::string_view::npos ? stream_id : stream_id.substr(0, dash));
}

std::string type_token(std::string_view type) {
  std::string t(type);
  for (char& c : t) {
    if (c == '.') c = '_';
  }
  return subject_token(t);
}

}  // namespace

std::string relay_subject(std::string_view prefix, std::string_view stream_id,
                          std::string_view type) {
  std::string s(prefix);
  s += '.';
  s += subject_token(category_of(stream_id));
  s += '.';
  s += type_token(type);
  return s;
}

std::string relay_category_filter(std::string_view prefix, std::string_view category) {
  std::string s(prefix);
  s += '.';
  s += subject_token(category);
  s += ".>";
  return s;
}

std::string header_value_encode(std::string_view value) {
  return escape(value, header_byte, '%');
}

std::string header_value_decode(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (value[i] == '%' && i + 2 < value.size()) {
      int hi = hex_value(value[i + 1]), lo = hex_value(value[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += value[i];
  }
  return out;
}

}  // namespace annals
