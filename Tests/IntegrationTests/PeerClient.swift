@preconcurrency import Crypto
import Foundation
import SyncSecurity
import SyncWire

/// A test-side peer: a blocking TCP socket driven by the same `SessionMachine` the daemon uses,
/// plus raw access so tests can send what no honest peer would.
final class PeerClient {
    enum Event: Equatable { case message(SessionMessage), closed }

    let fd: Int32
    var machine: SessionMachine
    private var pending: [SessionMessage] = []
    private(set) var remoteClosed = false

    init(port: Int, folderID: [UInt8], psk: [UInt8], key: Curve25519.KeyAgreement.PrivateKey = .init()) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw POSIXError(.ECONNREFUSED) }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        self.fd = fd
        machine = SessionMachine(initiatorFor: folderID, psk: psk, staticKey: key)
    }

    deinit { close(fd) }

    func sendRaw(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Reads once (up to the 5 s timeout); nil on EOF or error.
    func readRaw() -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { remoteClosed = true; return nil }
        return Array(buffer.prefix(n))
    }

    private func apply(_ directives: [SessionMachine.Directive]) {
        for d in directives {
            switch d {
            case .send(let b): sendRaw(b)
            case .deliver(let m): pending.append(m)
            case .established, .close: break
            }
        }
    }

    /// Runs the handshake; true once established, false if the daemon closed the connection.
    func handshake() -> Bool {
        apply(machine.start())
        while !machine.isEstablished {
            guard let bytes = readRaw() else { return false }
            apply(machine.receive(bytes))
            if machine.isClosed { return false }
        }
        return true
    }

    func send(_ message: SessionMessage) { apply(machine.send(message)) }

    /// The sealed frame for `message`, without sending it (to replay or reorder it).
    func seal(_ message: SessionMessage) -> [UInt8] {
        machine.send(message).reduce(into: []) { if case .send(let b) = $1 { $0 += b } }
    }

    /// The next message from the daemon, or `.closed` when the daemon ends the session.
    func next() -> Event {
        while pending.isEmpty {
            guard let bytes = readRaw() else { return .closed }
            apply(machine.receive(bytes))
            if machine.isClosed && pending.isEmpty { return .closed }
        }
        return .message(pending.removeFirst())
    }

    /// Skips messages until one matches; `.closed` if the session ends first.
    func next(where match: (SessionMessage) -> Bool) -> Event {
        while true {
            let e = next()
            if case .message(let m) = e, !match(m) { continue }
            return e
        }
    }

    /// Ping round trip: proves the session (and the daemon) still serves.
    func isAlive(_ n: UInt64 = 42) -> Bool {
        send(.ping(n))
        return next(where: { if case .pong = $0 { true } else { false } }) == .message(.pong(n))
    }
}
