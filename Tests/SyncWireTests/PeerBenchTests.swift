import SyncWire
import XCTest

/// `bench-request` and `bench-data` (Protocol/wire.md, "Bench") byte for byte, and the pure
/// measurement `PeerBenchRun`: every input carries its time, no test sleeps.
final class PeerBenchTests: XCTestCase {
    // MARK: codec

    func test_benchMessages_encodeAsTheSpecSays_andRoundTrip() throws {
        XCTAssertEqual(SessionMessage.maxBenchBytes, 1_048_571, "1 MiB less the answer's 5-byte header")
        let request = SessionMessage.benchRequest(id: 0x0102_0304, size: 1_048_571)
        XCTAssertEqual(request.encoded, [0x25, 0x01, 0x02, 0x03, 0x04, 0x00, 0x0F, 0xFF, 0xFB])
        let probe = SessionMessage.benchRequest(id: 9, size: 0)
        XCTAssertEqual(probe.encoded, [0x25, 0, 0, 0, 9, 0, 0, 0, 0])
        let data = SessionMessage.benchData(id: 7, bytes: [0xAA, 0xBB])
        XCTAssertEqual(data.encoded, [0x26, 0, 0, 0, 7, 0xAA, 0xBB])
        let empty = SessionMessage.benchData(id: 8, bytes: [])
        XCTAssertEqual(empty.encoded, [0x26, 0, 0, 0, 8])
        let full = SessionMessage.benchData(id: 1, bytes: [UInt8](repeating: 3, count: 1_048_571))
        for m in [request, probe, data, empty, full] { XCTAssertEqual(try SessionMessage(decoding: m.encoded), m) }
        XCTAssertEqual(full.encoded.count, TransportCipher.maxPlaintext, "the largest answer fills one frame exactly")
    }

    func test_malformedBenchMessages_areRejected() {
        let bad: [[UInt8]] = [
            [0x25],                                         // no id
            [0x25, 0, 0, 0, 1, 0, 0, 0],                    // short size
            [0x25, 0, 0, 0, 1, 0, 0, 0, 1, 0],              // trailing byte
            [0x25, 0, 0, 0, 1, 0, 0x0F, 0xFF, 0xFC],        // one byte more than fits a frame
            [0x25, 0, 0, 0, 1, 0, 0x10, 0, 0],              // 1 MiB
            [0x25, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF],     // 4 GiB
            [0x26],                                         // no id
            [0x26, 0, 0, 1],                                // short id
            [0x26, 0, 0, 0, 1] + [UInt8](repeating: 0, count: 1_048_572),   // more than fits a frame
        ]
        for b in bad { XCTAssertThrowsError(try SessionMessage(decoding: b), "\(b.prefix(12)) (\(b.count) bytes)") }
    }

    // MARK: the measurement

    private func settings(_ bytes: Int, window: Int = 2, probes: Int = 3) -> PeerBenchRun.Settings {
        PeerBenchRun.Settings(bytes: bytes, requestBytes: 1000, window: window, probes: probes, timeout: .seconds(10))
    }

    private func sent(_ directives: [PeerBenchRun.Directive]) -> [(id: UInt32, size: UInt32)] {
        directives.compactMap { if case let .send(.benchRequest(id, size)) = $0 { return (id, size) } else { return nil } }
    }

    func test_run_timesProbesOneAtATime_thenKeepsAWindowOfRequests_andReportsTheTransfer() throws {
        var run = PeerBenchRun(settings: settings(2500), now: .seconds(100))
        var out = sent(run.start(now: .seconds(100)))
        XCTAssertEqual(out.map(\.size), [0], "one empty probe first")
        // Round trips of 10, 30 and 20 ms: the median is 20 ms.
        var now = Duration.seconds(100)
        for (i, rtt) in [10, 30, 20].enumerated() {
            now += .milliseconds(rtt)
            let next = run.received(id: out[0].id, bytes: 0, now: now)
            out = sent(next)
            if i < 2 { XCTAssertEqual(out.map(\.size), [0], "the next probe only after the answer") }
        }
        XCTAssertEqual(out.map(\.size), [1000, 1000], "then a window of two requests")
        XCTAssertEqual(Set(out.map(\.id)).count, 2)
        now += .milliseconds(500)
        let third = sent(run.received(id: out[0].id, bytes: 1000, now: now))
        XCTAssertEqual(third.map(\.size), [500], "the last request asks for the rest only")
        XCTAssertEqual(run.received(id: out[1].id, bytes: 1000, now: now + .milliseconds(250)).count, 0)
        let done = run.received(id: third[0].id, bytes: 500, now: now + .milliseconds(1500))
        guard case .finished(let result)? = done.last else { return XCTFail("\(done)") }
        XCTAssertEqual(result.bytes, 2500)
        XCTAssertEqual(result.requests, 3)
        XCTAssertEqual(result.rtt, .milliseconds(20))
        XCTAssertEqual(result.seconds, 2.0, accuracy: 1e-9, "from the first request to the last byte")
        XCTAssertEqual(result.mbPerSecond, 2500 / 1e6 / 2.0, accuracy: 1e-12)
        XCTAssertTrue(run.isDone)
        XCTAssertEqual(run.received(id: third[0].id, bytes: 500, now: now + .seconds(2)), [], "nothing after the end")
    }

    func test_run_failsAndTellsTheShellToCloseTheSession_whenTheAnswerHasTheWrongLength() {
        var run = PeerBenchRun(settings: settings(2000, probes: 0), now: .zero)
        let out = sent(run.start(now: .zero))
        XCTAssertEqual(out.map(\.size), [1000, 1000], "no probes: the transfer at once")
        let d = run.received(id: out[0].id, bytes: 999, now: .milliseconds(5))
        guard case .violation(let why)? = d.last else { return XCTFail("\(d)") }
        XCTAssertTrue(why.contains("999") && why.contains("1000"), why)
        XCTAssertTrue(run.isDone)
    }

    func test_run_ignoresAnswersToNothingItAsked() {
        var run = PeerBenchRun(settings: settings(1000, probes: 1), now: .zero)
        let probe = sent(run.start(now: .zero))
        XCTAssertEqual(run.received(id: probe[0].id &+ 77, bytes: 0, now: .milliseconds(1)), [], "an unknown id (a late answer) is dropped")
        XCTAssertFalse(run.isDone)
    }

    func test_run_failsWhenThePeerAnswersNothingForTheTimeout_andWhenTheSessionEnds() {
        var run = PeerBenchRun(settings: settings(1000), now: .seconds(1))
        _ = run.start(now: .seconds(1))
        XCTAssertEqual(run.nextDeadline, .seconds(11))
        XCTAssertEqual(run.tick(now: .seconds(10)), [])
        guard case .failed(let why)? = run.tick(now: .seconds(11)).last else { return XCTFail() }
        XCTAssertTrue(why.contains("10"), why)
        XCTAssertTrue(run.isDone)

        var other = PeerBenchRun(settings: settings(1000), now: .zero)
        _ = other.start(now: .zero)
        XCTAssertEqual(other.sessionEnded("closed by peer"), [.failed("the session ended during the bench: closed by peer")])
        XCTAssertEqual(other.tick(now: .seconds(60)), [], "ended once")
    }

    func test_settings_neverAskMoreThanAFrameOrMoreThanThePeerAllows() {
        let s = PeerBenchRun.Settings(bytes: 1 << 30)
        XCTAssertEqual(s.requestBytes, 256 << 10, "the largest chunk FastCDC cuts")
        XCTAssertEqual(s.window, 16, "the chunk pull's window per peer")
        XCTAssertLessThanOrEqual(s.window * 2, PeerBenchRun.maxOutstanding)
        let big = PeerBenchRun.Settings(bytes: 1, requestBytes: 1 << 20, window: 1000)
        XCTAssertEqual(big.requestBytes, Int(SessionMessage.maxBenchBytes))
        XCTAssertEqual(big.window, PeerBenchRun.maxOutstanding)
    }
}
