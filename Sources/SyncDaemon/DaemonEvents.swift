import Foundation
import SyncCore
import SyncFS

/// Something that happened to a folder that a monitor or an application may want to know: the
/// one event stream of the daemon. `/api/events` sends every event as a server-sent event, the
/// `on_apply` hook runs on `batchApplied`, and the metrics count applies, conflicts, errors and
/// time scans and applies from it.
public struct DaemonEvent: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable {
        /// A batch of local changes was recorded in the index (`paths`).
        case localChangeIndexed = "local-change-indexed"
        /// A batch from a peer (`device`) was placed and recorded (`paths`, in `seconds`).
        case batchApplied = "batch-applied"
        /// Conflicts were resolved (`paths`; each left a conflict copy or kept our version).
        case conflict
        /// The folder paused, or a batch failed to apply (`message`; retried).
        case error
        case peerUp = "peer-up"
        case peerDown = "peer-down"
        /// A scan finished (`seconds`, `paths` empty): for the scan duration histogram; not sent
        /// on /api/events.
        case scanned
    }

    public var kind: Kind
    /// The folder's path.
    public var folder: String
    /// Seconds since 1970.
    public var time: Double
    /// Paths in display form (`RelativePath.display`).
    public var paths: [String]?
    /// The peer, as the CLI names it (its full device id).
    public var device: String?
    public var message: String?
    public var seconds: Double?

    public init(_ kind: Kind, folder: String, time: Double = Date().timeIntervalSince1970, paths: [String]? = nil,
                device: String? = nil, message: String? = nil, seconds: Double? = nil) {
        self.kind = kind; self.folder = folder; self.time = time; self.paths = paths
        self.device = device; self.message = message; self.seconds = seconds
    }
}

/// Broadcasts `DaemonEvent`s to every subscriber (`/api/events` clients, the hooks, the
/// metrics). Emitting never blocks: each subscriber has a bounded buffer, and a subscriber that
/// falls behind loses its oldest events rather than slowing an apply down. It also keeps the
/// last `recentCapacity` events for the status page.
public final class DaemonEvents: Sendable {
    /// Events each subscriber may have unread before its oldest are dropped.
    static let subscriberBuffer = 1024
    /// Events kept for the status page's "recent" lists.
    static let recentCapacity = 200

    private struct State {
        var subscribers: [UInt64: AsyncStream<DaemonEvent>.Continuation] = [:]
        var next: UInt64 = 0
        var recent: [DaemonEvent] = []
        var finished = false
    }
    private let state = Locked(State())

    public init() {}

    public func emit(_ event: DaemonEvent) {
        let targets: [AsyncStream<DaemonEvent>.Continuation] = state.withLock { s in
            guard !s.finished else { return [] }
            s.recent.append(event)
            if s.recent.count > Self.recentCapacity { s.recent.removeFirst(s.recent.count - Self.recentCapacity) }
            return Array(s.subscribers.values)
        }
        for continuation in targets { continuation.yield(event) }
    }

    /// Every event emitted from now on, until `finish()` (or the consumer stops iterating).
    public func subscribe() -> AsyncStream<DaemonEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: DaemonEvent.self, bufferingPolicy: .bufferingNewest(Self.subscriberBuffer))
        let id: UInt64? = state.withLock { s in
            guard !s.finished else { return nil }
            defer { s.next += 1 }
            s.subscribers[s.next] = continuation
            return s.next
        }
        guard let id else { continuation.finish(); return stream }
        continuation.onTermination = { [weak self] _ in _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) } }
        return stream
    }

    /// The last events (oldest first), at most `recentCapacity`.
    public var recent: [DaemonEvent] { state.withLock { $0.recent } }

    /// Ends every subscription (shutdown: an open `/api/events` response ends with it).
    public func finish() {
        let targets = state.withLock { s -> [AsyncStream<DaemonEvent>.Continuation] in
            s.finished = true
            defer { s.subscribers = [:] }
            return Array(s.subscribers.values)
        }
        for continuation in targets { continuation.finish() }
    }
}

/// One folder's way into `DaemonEvents`: what the folder's parts (`FolderService`,
/// `FolderExchange`) hold, so each emit is one line there; it also remembers what `status`
/// reports of them (counts, when each peer was last seen). An error repeated (a batch retried for
/// the same reason) is emitted once until the folder reports something else.
final class FolderEvents: Sendable {
    let folder: String
    private let sink: DaemonEvents?
    private let lastError = Locked<String?>(nil)

    struct Tally: Equatable {
        var applies = 0, errors = 0
        /// Devices with a session now.
        var connected: Set<String> = []
        /// Seconds since 1970 each device's session was last up (while up: when it came up).
        var lastSeen: [String: Double] = [:]
    }
    private let counts = Locked(Tally())

    /// The counts, with `lastSeen` set to now for the peers connected now.
    var tally: Tally {
        counts.withLock { t in
            var out = t
            let now = Date().timeIntervalSince1970
            for device in t.connected { out.lastSeen[device] = now }
            return out
        }
    }

    init(folder: String, sink: DaemonEvents?) { self.folder = folder; self.sink = sink }

    /// For parts made without a daemon (tests): emits nothing.
    static let none = FolderEvents(folder: "", sink: nil)

    func localChangeIndexed(_ paths: [String]) {
        emit(.init(.localChangeIndexed, folder: folder, paths: paths.map(RelativePath.display)))
    }

    func batchApplied(_ paths: [String], from device: String, seconds: Double) {
        lastError.withLock { $0 = nil }
        counts.withLock { $0.applies += 1 }
        emit(.init(.batchApplied, folder: folder, paths: paths.map(RelativePath.display), device: device, seconds: seconds))
    }

    func conflicts(_ paths: [String]) {
        guard !paths.isEmpty else { return }
        emit(.init(.conflict, folder: folder, paths: paths.map(RelativePath.display)))
    }

    func error(_ message: String) {
        guard lastError.withLock({ last in defer { last = message }; return last != message }) else { return }
        counts.withLock { $0.errors += 1 }
        emit(.init(.error, folder: folder, message: message))
    }

    func peer(_ device: String, up: Bool) {
        counts.withLock { t in
            if up { t.connected.insert(device) } else { t.connected.remove(device) }
            t.lastSeen[device] = Date().timeIntervalSince1970
        }
        emit(.init(up ? .peerUp : .peerDown, folder: folder, device: device))
    }

    func scanned(seconds: Double) {
        emit(.init(.scanned, folder: folder, seconds: seconds))
    }

    private func emit(_ event: DaemonEvent) { sink?.emit(event) }
}
