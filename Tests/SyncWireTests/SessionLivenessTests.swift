import SyncWire
import XCTest

/// The keepalive as a pure state machine: every input carries its time, no test sleeps.
final class SessionLivenessTests: XCTestCase {
    let settings = SessionLiveness.Settings(interval: .seconds(2), timeout: .seconds(6))

    func test_onTick_shouldPingAtOnce_thenEveryInterval() {
        var l = SessionLiveness(settings: settings, now: .seconds(10))
        XCTAssertEqual(l.nextDeadline, .seconds(10))
        XCTAssertEqual(l.onTick(now: .seconds(10)), [.sendPing(1)])
        XCTAssertEqual(l.onTick(now: .milliseconds(11_999)), [], "nothing due before the interval")
        l.onFrameReceived(now: .seconds(11))
        XCTAssertEqual(l.nextDeadline, .seconds(12))
        XCTAssertEqual(l.onTick(now: .seconds(12)), [.sendPing(2)])
        l.onFrameReceived(now: .seconds(13))
        XCTAssertEqual(l.onTick(now: .milliseconds(14_300)), [.sendPing(3)], "a late tick pings once")
        XCTAssertEqual(l.nextDeadline, .milliseconds(16_300))
    }

    func test_anythingReceived_shouldKeepTheSessionOpen_pastTheTimeout() {
        var l = SessionLiveness(settings: settings, now: .zero)
        for second in 0..<30 {
            l.onFrameReceived(now: .seconds(second))
            for action in l.onTick(now: .seconds(second) + .milliseconds(500)) {
                if case .close = action { XCTFail("closed at \(second) s although frames keep arriving") }
            }
        }
    }

    func test_silencePastTheTimeout_shouldCloseOnce() {
        var l = SessionLiveness(settings: settings, now: .zero)
        XCTAssertEqual(l.onTick(now: .zero), [.sendPing(1)])
        l.onFrameReceived(now: .seconds(1))
        XCTAssertEqual(l.onTick(now: .seconds(2)), [.sendPing(2)])
        XCTAssertEqual(l.onTick(now: .seconds(4)), [.sendPing(3)])
        XCTAssertEqual(l.onTick(now: .seconds(6)), [.sendPing(4)])
        XCTAssertEqual(l.nextDeadline, .seconds(7), "the timeout comes before the next ping")
        XCTAssertEqual(l.onTick(now: .milliseconds(6_999)), [])
        XCTAssertEqual(l.onTick(now: .seconds(7)), [.close(silentFor: .seconds(6))])
        XCTAssertEqual(l.onTick(now: .seconds(8)), [], "closed once; a closed session never pings")
        XCTAssertTrue(l.isClosed)
    }

    func test_pong_shouldGiveTheRTT_smoothed() {
        var l = SessionLiveness(settings: settings, now: .zero)
        XCTAssertNil(l.rtt)
        XCTAssertEqual(l.onTick(now: .zero), [.sendPing(1)])
        l.onPong(1, now: .milliseconds(80))
        XCTAssertEqual(l.rtt, .milliseconds(80), "the first sample is the estimate")
        XCTAssertEqual(l.onTick(now: .seconds(2)), [.sendPing(2)])
        l.onPong(2, now: .seconds(2) + .milliseconds(160))
        XCTAssertEqual(l.rtt, .milliseconds(90), "7/8 of 80 ms + 1/8 of 160 ms")
        XCTAssertEqual(l.latestRTT, .milliseconds(160))
    }

    func test_pongNobodyAskedFor_shouldCountAsLife_butGiveNoRTT() {
        var l = SessionLiveness(settings: settings, now: .zero)
        _ = l.onTick(now: .zero)
        l.onPong(99, now: .seconds(5))
        XCTAssertNil(l.rtt)
        XCTAssertEqual(l.nextDeadline, .seconds(2))
        _ = l.onTick(now: .seconds(2)); _ = l.onTick(now: .seconds(4)); _ = l.onTick(now: .seconds(6))
        XCTAssertFalse(l.onTick(now: .seconds(8)).contains { if case .close = $0 { true } else { false } },
                       "silent only since 5 s")
        l.onPong(1, now: .seconds(9))
        XCTAssertNil(l.rtt, "a pong older than the timeout is no sample")
    }

    func test_unansweredPings_shouldNotPileUp() {
        var l = SessionLiveness(settings: settings, now: .zero)
        for second in stride(from: 0, to: 600, by: 2) {
            l.onFrameReceived(now: .seconds(second))
            _ = l.onTick(now: .seconds(second))
        }
        XCTAssertLessThanOrEqual(l.unansweredPings, 4, "only pings younger than the timeout are remembered")
    }
}
