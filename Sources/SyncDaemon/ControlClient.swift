import Foundation

/// A blocking client for the control socket, used by the `syncd` commands.
public enum ControlClient {
    public enum Failure: Error, CustomStringConvertible {
        case notRunning(String)
        case protocolError(String)

        public var description: String {
            switch self {
            case .notRunning(let home):
                return "the syncd daemon is not running for home \(home) (start it with `syncd daemon --home \(home)`)"
            case .protocolError(let why): return "unexpected answer from the daemon: \(why)"
            }
        }
    }

    public static func send(_ request: ControlRequest, home: Home, timeout: TimeInterval = 60) throws -> ControlResponse {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure.notRunning(home.path) }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let path = Array(home.controlSocketPath.utf8)
        guard path.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw Failure.protocolError("control socket path too long: \(home.controlSocketPath)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: path)
            raw[path.count] = 0
        }
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw Failure.notRunning(home.path) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))

        var line = try JSONEncoder().encode(request)
        line.append(UInt8(ascii: "\n"))
        try line.withUnsafeBytes { raw in
            var sent = 0
            while sent < raw.count {
                let n = Foundation.send(fd, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
                if n <= 0 { throw Failure.protocolError("send failed: \(String(cString: strerror(errno)))") }
                sent += n
            }
        }
        var received = Data()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !received.contains(UInt8(ascii: "\n")) {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { throw Failure.protocolError(n == 0 ? "connection closed" : String(cString: strerror(errno))) }
            received.append(contentsOf: chunk[..<n])
        }
        let body = received.prefix { $0 != UInt8(ascii: "\n") }
        do {
            return try JSONDecoder().decode(ControlResponse.self, from: body)
        } catch {
            throw Failure.protocolError("\(error)")
        }
    }
}
