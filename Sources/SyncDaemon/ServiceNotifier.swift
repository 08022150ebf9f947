import Foundation

/// systemd's readiness protocol (sd_notify(3)) without libsystemd: each state is one datagram of
/// `KEY=VALUE` lines to the unix socket named by `$NOTIFY_SOCKET` (an abstract socket when the
/// name starts with '@'). `Type=notify` units get READY=1 once the daemon serves requests,
/// RELOADING=1 and READY=1 around a SIGHUP reload, STOPPING=1 when it begins to stop, and
/// WATCHDOG=1 every half of `$WATCHDOG_USEC` when the unit sets `WatchdogSec=`.
public struct ServiceNotifier: Sendable {
    public let socketPath: String
    /// The keepalive period systemd asks for, nil without `WatchdogSec=` (or when
    /// `$WATCHDOG_PID` names another process).
    public let watchdogInterval: Duration?

    /// nil when `$NOTIFY_SOCKET` is not set: not run by systemd (or a unit without `Type=notify`).
    public init?(environment: [String: String] = ProcessInfo.processInfo.environment, pid: pid_t = getpid()) {
        guard let socket = environment["NOTIFY_SOCKET"], !socket.isEmpty else { return nil }
        socketPath = socket
        if let usec = environment["WATCHDOG_USEC"].flatMap(UInt64.init), usec > 0,
           environment["WATCHDOG_PID"].flatMap(pid_t.init).map({ $0 == pid }) ?? true {
            watchdogInterval = .microseconds(Int64(usec / 2))
        } else {
            watchdogInterval = nil
        }
    }

    /// Sends `state` ("READY=1", …); false when the socket is gone or refuses it. Never blocks.
    @discardableResult
    public func send(_ state: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var name = Array(socketPath.utf8)
        if name.first == UInt8(ascii: "@") { name[0] = 0 }   // abstract namespace
        guard name.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: name) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + name.count + (name.first == 0 ? 0 : 1))
        let bytes = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT), $0, length)
            }
        }
        return sent == bytes.count
    }

    /// RELOADING=1 must carry the monotonic time (systemd ≥ 253 checks it for `Type=notify-reload`).
    public static func reloading(now: timespec = monotonicNow()) -> String {
        "RELOADING=1\nMONOTONIC_USEC=\(UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000)"
    }

    public static func monotonicNow() -> timespec {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return ts
    }
}
