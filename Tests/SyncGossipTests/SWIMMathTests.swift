@testable import SyncGossip
import XCTest

/// The formulas with exact values, worked out by hand from their definitions (memberlist's
/// util_test.go and suspicion_test.go test the same functions the same way).
final class SWIMMathTests: XCTestCase {
    func test_suspicionTimeout_shouldScaleWithLog10OfClusterSize() {
        let expected: [Int: Nanos] = [5: .ms(1000), 10: .ms(1000), 50: .ms(1698), 100: .ms(2000), 500: .ms(2698), 1000: .ms(3000)]
        for (n, timeout) in expected {
            XCTAssertEqual(SWIMMath.suspicionTimeout(mult: 3, n: n, interval: .seconds(1)) / 3, timeout, "n = \(n)")
        }
        XCTAssertEqual(SWIMMath.suspicionTimeout(mult: 4, n: 200, interval: .seconds(1)), .ms(4 * 2301))
    }

    func test_retransmitLimit_shouldBeMultTimesCeilLog10() {
        XCTAssertEqual(SWIMMath.retransmitLimit(mult: 3, n: 0), 0)
        XCTAssertEqual(SWIMMath.retransmitLimit(mult: 3, n: 1), 3)
        XCTAssertEqual(SWIMMath.retransmitLimit(mult: 3, n: 99), 6)
        XCTAssertEqual(SWIMMath.retransmitLimit(mult: 4, n: 200), 12)
    }

    func test_pushPullScale_shouldAddAMultipleForEveryDoublingAbove32() {
        for n in 0...32 { XCTAssertEqual(SWIMMath.pushPullScale(interval: .seconds(1), n: n), .seconds(1)) }
        for n in 33...64 { XCTAssertEqual(SWIMMath.pushPullScale(interval: .seconds(1), n: n), .seconds(2)) }
        for n in 65...128 { XCTAssertEqual(SWIMMath.pushPullScale(interval: .seconds(1), n: n), .seconds(3)) }
        XCTAssertEqual(SWIMMath.pushPullScale(interval: .seconds(30), n: 200), .seconds(120))
    }

    func test_remainingSuspicionTime_shouldShrinkWithConfirmations() {
        let cases: [(n: Int, k: Int, elapsed: Nanos, expected: Nanos)] = [
            (0, 3, 0, .seconds(30)),
            (1, 3, .seconds(2), .seconds(14)),
            (2, 3, .seconds(3), .ms(4810)),
            (3, 3, .seconds(4), .seconds(-2)),
            (4, 3, .seconds(5), .seconds(-3)),
            (5, 3, .seconds(10), .seconds(-8)),
        ]
        for c in cases {
            XCTAssertEqual(SWIMMath.remainingSuspicionTime(confirmations: c.n, k: c.k, elapsed: c.elapsed,
                                                           min: .seconds(2), max: .seconds(30)), c.expected, "n = \(c.n)")
        }
    }

    func test_scaled_shouldMultiplyByHealthPlusOne() {
        XCTAssertEqual(SWIMMath.scaled(.ms(500), health: 0), .ms(500))
        XCTAssertEqual(SWIMMath.scaled(.ms(500), health: 7), .ms(4000))
    }
}
