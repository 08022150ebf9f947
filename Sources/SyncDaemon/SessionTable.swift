import SyncCore
import SyncFS
import SyncSecurity

/// The established sessions of this daemon, by peer device, for whoever needs to know about
/// them off the event loop: their measured round-trip times (chunk-request timeouts) and a way to
/// close the quiet ones when gossip says their peer came back. Thread-safe.
final class SessionTable: Sendable {
    struct Entry: Sendable {
        let device: ShortDeviceID
        let folderID: [UInt8]
        var rtt: Duration?
        /// Closes the session if nothing arrived on it for longer than the given time (hops to
        /// the session's event loop; the keepalive state lives there).
        let closeIfQuiet: @Sendable (_ longerThan: Duration, _ reason: String) -> Void
    }

    private let entries = Locked<[ObjectIdentifier: Entry]>([:])

    func register(_ id: ObjectIdentifier, _ entry: Entry) { entries.withLock { $0[id] = entry } }
    func remove(_ id: ObjectIdentifier) { _ = entries.withLock { $0.removeValue(forKey: id) } }
    func update(_ id: ObjectIdentifier, rtt: Duration?) { entries.withLock { $0[id]?.rtt = rtt } }

    /// The smoothed round-trip time to `device`: the largest over its sessions (one per shared
    /// folder), nil while no session to it has measured one.
    func rtt(of device: ShortDeviceID) -> Duration? {
        entries.withLock { $0.values.filter { $0.device == device }.compactMap(\.rtt).max() }
    }

    func sessionCount(with device: ShortDeviceID) -> Int {
        entries.withLock { $0.values.filter { $0.device == device }.count }
    }

    /// Closes every session with `device` that heard nothing for longer than `quiet`: after gossip
    /// lost and found the peer, such a session is most likely dead, and closing it lets the
    /// dialer reconnect at once instead of waiting for the keepalive timeout.
    func closeQuiet(device: ShortDeviceID, longerThan quiet: Duration, reason: String) {
        let matching = entries.withLock { $0.values.filter { $0.device == device } }
        for entry in matching { entry.closeIfQuiet(quiet, reason) }
    }
}
