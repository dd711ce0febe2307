// A small HTTP/1.1 client over a loopback socket for the server's tests: one request per connection, the
// whole reply read (chunked bodies decoded), every wait bounded. Raw sockets so that tests can also send
// a body slowly, or not at all, and hang up in the middle of a stream.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace bmojo::test {

struct HttpReply {
  int status = 0;                              // 0: no reply (connection failed, closed or timed out)
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

// Connects to 127.0.0.1:port (-1 on failure); reads give up after timeout_s.
int connect_loopback(int port, int timeout_s = 60);
// Reads until the reply is complete (or the peer closes) and parses it.
HttpReply read_reply(int fd);
HttpReply http_request(int port, const std::string& method, const std::string& path,
                       const std::string& body = "",
                       const std::vector<std::string>& headers = {"Content-Type: application/json"});
inline HttpReply post_json(int port, const std::string& path, const std::string& body) {
  return http_request(port, "POST", path, body);
}
// The data: payloads of a server-sent event stream, in order.
std::vector<std::string> sse_events(const std::string& body);

}  // namespace bmojo::test
