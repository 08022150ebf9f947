/// Keepalive and round-trip time of one established session, as a pure state machine with
/// injected time (Protocol/wire.md, "Keepalive"). Both ends ping every `interval`; anything
/// received counts as a sign of life; a session that heard nothing for `timeout` is to be closed
/// (and redialled). The pong to each ping gives an RTT sample, smoothed as TCP does (RFC 6298).
///
/// The shell feeds it reads, pongs and ticks at `nextDeadline`, and carries out the actions.
/// Times are offsets from any fixed origin the caller picks (a monotonic clock).
public struct SessionLiveness: Sendable {
    public struct Settings: Sendable, Equatable {
        /// How often each end pings. Must be shorter than `timeout`.
        public var interval: Duration
        /// Silence after which the session is considered dead.
        public var timeout: Duration
        public init(interval: Duration, timeout: Duration) {
            self.interval = interval
            self.timeout = timeout
        }
    }

    public enum Action: Sendable, Equatable {
        case sendPing(UInt64)
        /// Nothing arrived for `silentFor` (≥ the timeout): close the session and redial.
        case close(silentFor: Duration)
    }

    public let settings: Settings
    private var lastHeard: Duration
    private var nextPing: Duration
    private var nextNumber: UInt64 = 1
    /// Pings not answered yet, by number: when each was sent. Only those younger than the timeout.
    private var unanswered: [UInt64: Duration] = [:]
    private var smoothed: Duration?
    private var variance: Duration = .zero
    public private(set) var latestRTT: Duration?
    public private(set) var isClosed = false

    /// A session established at `now`: the first ping is due at once.
    public init(settings: Settings, now: Duration) {
        self.settings = settings
        lastHeard = now
        nextPing = now
    }

    /// Bytes arrived on the session.
    public mutating func onFrameReceived(now: Duration) {
        lastHeard = max(lastHeard, now)
    }

    /// A pong arrived: a sign of life and, when it answers one of our pings, an RTT sample.
    public mutating func onPong(_ n: UInt64, now: Duration) {
        onFrameReceived(now: now)
        guard let sent = unanswered.removeValue(forKey: n) else { return }
        // Pongs come in order on one stream: older pings were lost to a peer that does not answer.
        unanswered = unanswered.filter { $0.key > n }
        let sample = now - sent
        latestRTT = sample
        if let srtt = smoothed {
            let error = srtt > sample ? srtt - sample : sample - srtt
            variance = variance * 3 / 4 + error / 4
            smoothed = srtt * 7 / 8 + sample / 8
        } else {
            smoothed = sample
            variance = sample / 2
        }
    }

    /// What is due at `now`: a ping every interval, or the close once the silence reaches the timeout.
    public mutating func onTick(now: Duration) -> [Action] {
        guard !isClosed else { return [] }
        let silence = now - lastHeard
        if silence >= settings.timeout {
            isClosed = true
            unanswered = [:]
            return [.close(silentFor: silence)]
        }
        guard now >= nextPing else { return [] }
        let n = nextNumber
        nextNumber += 1
        unanswered = unanswered.filter { now - $0.value < settings.timeout }
        unanswered[n] = now
        nextPing = now + settings.interval
        return [.sendPing(n)]
    }

    /// When `onTick` next has something to do.
    public var nextDeadline: Duration { min(nextPing, lastHeard + settings.timeout) }

    /// The smoothed round-trip time; nil until the first pong.
    public var rtt: Duration? { smoothed }
    /// The RTT's mean deviation (RFC 6298 RTTVAR); zero until the first pong.
    public var rttVariation: Duration { variance }

    /// How long nothing has arrived.
    public func silence(now: Duration) -> Duration { now - lastHeard }

    public var unansweredPings: Int { unanswered.count }
}
