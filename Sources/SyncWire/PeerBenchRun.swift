/// One `syncd bench peer` measurement over an established session (Protocol/wire.md, "Bench"),
/// as a pure state machine with injected time: first `probes` empty bench requests one at a time
/// (their median round trip is the RTT), then `bytes` of scratch payload pulled as chunks are: a
/// window of requests of `requestBytes` in flight. Every answer must be exactly as long
/// as asked; a wrong length is a protocol violation (the shell closes the session).
///
/// The shell sends what `.send` says, feeds answers, ticks at `nextDeadline`, and reports
/// `.finished` or the failure. Times are offsets from any fixed origin (a monotonic clock).
public struct PeerBenchRun: Sendable {
    public struct Settings: Sendable, Equatable {
        /// Bytes to pull in all.
        public var bytes: Int
        /// Bytes per request: by default the largest chunk FastCDC cuts (256 KiB); at most what
        /// fits a frame (`SessionMessage.maxBenchBytes`).
        public var requestBytes: Int
        /// Requests in flight: by default the chunk pull's window per peer (`PullPlanner`, 16);
        /// at most what a peer serves at once (`maxOutstanding`).
        public var window: Int
        /// Round trips timed before the transfer.
        public var probes: Int
        /// The run fails when the peer answers nothing for this long.
        public var timeout: Duration

        public init(bytes: Int, requestBytes: Int = 256 << 10, window: Int = 16, probes: Int = 5,
                    timeout: Duration = .seconds(10)) {
            self.bytes = max(1, bytes)
            self.requestBytes = max(1, min(requestBytes, Int(SessionMessage.maxBenchBytes)))
            self.window = max(1, min(window, PeerBenchRun.maxOutstanding))
            self.probes = max(0, probes)
            self.timeout = timeout
        }
    }

    /// The most bench requests a peer serves at once on one session (received and not yet
    /// written to the socket); one more closes the session. Twice our own default window.
    public static let maxOutstanding = 32

    public struct Result: Sendable, Equatable {
        public var bytes: Int64
        /// From the first transfer request sent to the last byte received.
        public var seconds: Double
        /// Median of the probes' round trips (zero without probes).
        public var rtt: Duration
        public var requests: Int
        /// MB (10^6 bytes) per second.
        public var mbPerSecond: Double { seconds > 0 ? Double(bytes) / 1e6 / seconds : 0 }
    }

    public enum Directive: Sendable, Equatable {
        case send(SessionMessage)
        case finished(Result)
        /// The run failed (timeout, session gone); the session itself is fine.
        case failed(String)
        /// The peer broke the protocol: the run failed and the session is to be closed.
        case violation(String)
    }

    public let settings: Settings
    private var nextID: UInt32
    /// Requests in flight: id → bytes asked.
    private var outstanding: [UInt32: Int] = [:]
    private var probeSent: Duration?
    private var rtts: [Duration] = []
    private var requested = 0, received = 0, requests = 0
    private var transferStart: Duration?
    private var lastHeard: Duration
    public private(set) var isDone = false

    /// `firstID`: bench ids are the session's own; any start will do.
    public init(settings: Settings, now: Duration, firstID: UInt32 = 1) {
        self.settings = settings
        self.nextID = firstID
        lastHeard = now
    }

    /// When `tick` must be called next: the timeout since the peer last answered.
    public var nextDeadline: Duration { lastHeard + settings.timeout }

    public mutating func start(now: Duration) -> [Directive] {
        lastHeard = now
        return settings.probes > 0 ? [probe(now: now)] : fill(now: now)
    }

    /// A bench-data answer of `bytes` bytes to request `id`.
    public mutating func received(id: UInt32, bytes count: Int, now: Duration) -> [Directive] {
        guard !isDone, let asked = outstanding.removeValue(forKey: id) else { return [] }   // late, or never asked
        lastHeard = now
        guard count == asked else {
            isDone = true
            return [.violation("the peer answered \(count) bytes to a bench request of \(asked)")]
        }
        if let sent = probeSent {
            probeSent = nil
            rtts.append(now - sent)
            return rtts.count < settings.probes ? [probe(now: now)] : fill(now: now)
        }
        received += count
        if received >= settings.bytes {
            isDone = true
            let start = transferStart ?? now
            return [.finished(Result(bytes: Int64(received), seconds: Self.seconds(now - start), rtt: median, requests: requests))]
        }
        return fill(now: now)
    }

    public mutating func tick(now: Duration) -> [Directive] {
        guard !isDone, now >= nextDeadline else { return [] }
        isDone = true
        return [.failed("the peer answered nothing for \(settings.timeout.components.seconds) s")]
    }

    public mutating func sessionEnded(_ reason: String) -> [Directive] {
        guard !isDone else { return [] }
        isDone = true
        return [.failed("the session ended during the bench: \(reason)")]
    }

    private static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

    private var median: Duration {
        guard !rtts.isEmpty else { return .zero }
        return rtts.sorted()[rtts.count / 2]
    }

    private mutating func take() -> UInt32 {
        defer { nextID &+= 1 }
        return nextID
    }

    private mutating func probe(now: Duration) -> Directive {
        let id = take()
        outstanding[id] = 0
        probeSent = now
        return .send(.benchRequest(id: id, size: 0))
    }

    /// Tops the window up with requests for what is left.
    private mutating func fill(now: Duration) -> [Directive] {
        if transferStart == nil { transferStart = now }
        var out: [Directive] = []
        while outstanding.count < settings.window && requested < settings.bytes {
            let size = min(settings.requestBytes, settings.bytes - requested)
            let id = take()
            outstanding[id] = size
            requested += size
            requests += 1
            out.append(.send(.benchRequest(id: id, size: UInt32(size))))
        }
        return out
    }
}
