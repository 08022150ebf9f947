@testable import SyncGossip
import XCTest

/// The state machine without sockets: feed it messages and times, look at what it says.
final class SWIMInstanceTests: XCTestCase {
    func endpoint(_ n: UInt64) -> Endpoint { Endpoint(host: "10.0.0.\(n)", port: 7700) }

    func state(_ n: UInt64, inc: UInt64 = 1, uid: UInt64 = 100, status: MemberStatus = .alive) -> MemberState {
        MemberState(name: n, uid: uid, incarnation: inc, status: status, endpoint: endpoint(n), meta: [])
    }

    /// Node 1 knowing members 2 … n.
    func instance(members n: UInt64 = 5, settings: SWIMSettings = SWIMSettings()) -> SWIMInstance {
        var s = SWIMInstance(settings: settings, name: 1, uid: 1, endpoint: endpoint(1), seed: 42, now: 0)
        _ = s.mergeRemoteState((2...n).map { state($0) }, now: 0)
        s.broadcasts = BroadcastQueue()
        return s
    }

    func sends(_ directives: [SWIMInstance.Directive]) -> [(Endpoint, [SWIMMessage])] {
        directives.compactMap { if case let .send(to, m) = $0 { (to, m) } else { nil } }
    }

    func test_staleUpdates_shouldBeIgnored() {
        var s = instance()
        _ = s.receive([.alive(state(2, inc: 5))], from: endpoint(2), now: 1)
        _ = s.receive([.alive(state(2, inc: 3))], from: endpoint(2), now: 2)
        XCTAssertEqual(s.member(2)?.incarnation, 5)
        _ = s.receive([.suspect(name: 2, uid: 100, incarnation: 4, from: 3)], from: endpoint(3), now: 3)
        XCTAssertEqual(s.member(2)?.status, .alive, "a suspicion about an older incarnation is stale")
        _ = s.receive([.dead(name: 2, uid: 999, incarnation: 9, from: 3)], from: endpoint(3), now: 4)
        XCTAssertEqual(s.member(2)?.status, .alive, "a rumour about another life (uid) does not apply")
    }

    func test_dead_shouldBeTerminalForItsIncarnation() {
        var s = instance()
        _ = s.receive([.dead(name: 2, uid: 100, incarnation: 1, from: 3)], from: endpoint(3), now: 1)
        XCTAssertEqual(s.member(2)?.status, .dead)
        _ = s.receive([.suspect(name: 2, uid: 100, incarnation: 1, from: 4)], from: endpoint(4), now: 2)
        _ = s.receive([.alive(state(2, inc: 1))], from: endpoint(2), now: 3)
        XCTAssertEqual(s.member(2)?.status, .dead)
        // Only a refutation (higher incarnation) or a new life brings it back.
        _ = s.receive([.alive(state(2, inc: 2))], from: endpoint(2), now: 4)
        XCTAssertEqual(s.member(2)?.status, .alive)
        _ = s.receive([.dead(name: 3, uid: 100, incarnation: 1, from: 3)], from: endpoint(3), now: 5)
        XCTAssertEqual(s.member(3)?.status, .left, "dead from itself means a graceful leave")
    }

    func test_suspicionAboutSelf_shouldBeRefutedWithHigherIncarnation() {
        var s = instance()
        XCTAssertEqual(s.me.incarnation, 1)
        _ = s.receive([.suspect(name: 1, uid: 1, incarnation: 1, from: 2)], from: endpoint(2), now: 1)
        XCTAssertEqual(s.me.incarnation, 2)
        XCTAssertEqual(s.awareness, 1, "having to refute is a sign of our own ill health")
        _ = s.receive([.dead(name: 1, uid: 1, incarnation: 7, from: 3)], from: endpoint(3), now: 2)
        XCTAssertEqual(s.me.incarnation, 8)
        // The refutation goes out with the next packet.
        let out = sends(s.receive([.ping(seq: 9, target: 1, source: 2)], from: endpoint(2), now: 3))
        XCTAssertTrue(out[0].1.contains(.alive(s.me)))
        XCTAssertEqual(out[0].1.first, .ack(seq: 9))
    }

    /// Lifeguard: a probe that fails while the helpers stay silent (no nacks) raises local health
    /// by the missing nacks; an ack lowers it.
    func test_localHealth_shouldRiseOnMissedNacksAndFallOnAck() throws {
        var s = instance(members: 6)
        var now: Nanos = 0
        var probe: (Endpoint, UInt32)?
        while probe == nil && now < .seconds(30) {
            now += .ms(10)
            for (to, messages) in sends(s.tick(now: now)) {
                if case let .ping(seq, _, _)? = messages.first { probe = (to, seq) }
            }
        }
        var helpers = 0
        XCTAssertNotNil(probe)
        while let p = s.probe, now < p.timeoutAt + .ms(20) {
            now += .ms(10)
            helpers += sends(s.tick(now: now)).filter { if case .pingReq? = $0.1.first { true } else { false } }.count
        }
        XCTAssertEqual(helpers, 3)
        _ = s.receive([.nack(seq: probe!.1)], from: endpoint(3), now: now)   // one of three helpers answers
        while s.probe?.seq == probe!.1 && now < .seconds(30) { now += .ms(10); _ = s.tick(now: now) }
        XCTAssertEqual(s.awareness, 2, "two missing nacks")
        let target = UInt64(probe!.0.host.split(separator: ".").last!)!
        XCTAssertEqual(s.member(target)?.status, .suspect)
        // The next probe (it may have started in the same tick) is answered in time: health improves by one.
        var next = s.probe?.seq
        while next == nil && now < .seconds(30) {
            now += .ms(10)
            for (_, messages) in sends(s.tick(now: now)) { if case let .ping(seq, _, _)? = messages.first { next = seq } }
        }
        _ = s.receive([.ack(seq: try XCTUnwrap(next))], from: endpoint(9), now: now + .ms(1))
        XCTAssertEqual(s.awareness, 1)
    }

    func test_roundRobin_shouldVisitEveryoneOncePerPass() {
        var s = instance(members: 11)
        var now: Nanos = 0
        var targets: [UInt64] = []
        while targets.count < 20 {
            now += .ms(10)
            for (_, messages) in sends(s.tick(now: now)) {
                if case let .ping(seq, target, _)? = messages.first {
                    targets.append(target)
                    _ = s.receive([.ack(seq: seq)], from: endpoint(target), now: now)
                }
            }
        }
        XCTAssertEqual(Set(targets.prefix(10)), Set(2...11))
        XCTAssertEqual(Set(targets.suffix(10)), Set(2...11))
        XCTAssertNotEqual(Array(targets.prefix(10)), Array(targets.suffix(10)), "a fresh order each pass")
    }

    func test_buddySystem_shouldTellASuspectThatItIsSuspected() {
        var s = instance(members: 2)
        _ = s.receive([.suspect(name: 2, uid: 100, incarnation: 1, from: 3)], from: endpoint(3), now: 0)
        var now: Nanos = 0
        while true {
            now += .ms(10)
            if let (_, messages) = sends(s.tick(now: now)).first(where: { if case .ping? = $0.1.first { true } else { false } }) {
                XCTAssertTrue(messages.contains(.suspect(name: 2, uid: 100, incarnation: 1, from: 1)))
                return
            }
        }
    }

    func test_suspicion_shouldExpireFasterWithIndependentConfirmations() {
        // 10 members: min = 4 × log10(10) × 1 s = 4 s, max = 24 s, k = 2.
        func deadAt(confirmers: [UInt64]) -> Nanos {
            var s = instance(members: 10)
            _ = s.receive([.suspect(name: 2, uid: 100, incarnation: 1, from: 3)], from: endpoint(3), now: 0)
            for c in confirmers { _ = s.receive([.suspect(name: 2, uid: 100, incarnation: 1, from: c)], from: endpoint(c), now: 0) }
            var now: Nanos = 0
            while s.member(2)?.status == .suspect && now < .seconds(60) {
                now += .ms(100)
                // Every probe is answered, so only the injected rumours count.
                for (to, m) in sends(s.tick(now: now)) {
                    if case let .ping(seq, _, _)? = m.first { _ = s.receive([.ack(seq: seq)], from: to, now: now) }
                }
            }
            XCTAssertEqual(s.member(2)?.status, .dead)
            return now
        }
        XCTAssertEqual(deadAt(confirmers: []), .seconds(24))
        XCTAssertEqual(deadAt(confirmers: [4]), .ms(11400), "one of k = 2: 24 − log 2 / log 3 × 20 = 11.38 s")
        XCTAssertEqual(deadAt(confirmers: [4, 5]), .seconds(4), "all k confirmations: the minimum")
        XCTAssertEqual(deadAt(confirmers: [4, 4, 4]), .ms(11400), "the same confirmer counts once")
    }

    func test_packets_shouldStayWithinBudgetAndRetransmitLimit() {
        var s = instance(members: 3)
        for n in UInt64(100)..<UInt64(200) {
            _ = s.receive([.alive(MemberState(name: n, uid: 1, incarnation: 1, status: .alive, endpoint: endpoint(n),
                                               meta: [UInt8](repeating: 7, count: 40)))], from: endpoint(2), now: 0)
        }
        var sent = 0
        var now: Nanos = 0
        while !s.broadcasts.isEmpty && now < .seconds(60) {
            now += .ms(50)
            for (to, messages) in sends(s.tick(now: now)) {
                XCTAssertLessThanOrEqual(SWIMCodec.encode(messages).count, 1400)
                XCTAssertEqual(try SWIMCodec.decode(SWIMCodec.encode(messages)), messages)
                sent += messages.count
                if case let .ping(seq, _, _)? = messages.first { _ = s.receive([.ack(seq: seq)], from: to, now: now) }
            }
        }
        XCTAssertTrue(s.broadcasts.isEmpty, "every broadcast retires after its retransmit limit")
        let limit = SWIMMath.retransmitLimit(mult: 4, n: s.liveCount)
        XCTAssertLessThanOrEqual(sent, 100 * limit + 100)
    }

    func test_codec_shouldRoundTripAndRejectMalformedPackets() throws {
        let all: [SWIMMessage] = [
            .ping(seq: 1, target: 2, source: 3), .pingReq(seq: 4, target: 5, endpoint: endpoint(5), wantNack: true, source: 6),
            .ack(seq: 7), .nack(seq: 8), .alive(state(9)), .suspect(name: 1, uid: 2, incarnation: 3, from: 4),
            .dead(name: 5, uid: 6, incarnation: 7, from: 8),
        ]
        XCTAssertEqual(try SWIMCodec.decode(SWIMCodec.encode(all)), all)
        let states = [state(2), state(3, inc: 9, status: .dead)]
        XCTAssertEqual(try SWIMCodec.decodeState(SWIMCodec.encodeState(states, join: true)).members, states)
        for bad: [UInt8] in [[], [0], [1, 0, 1, 99], [1, 0, 5, 3, 0, 0, 0, 7, 0], SWIMCodec.encode(all) + [0]] {
            XCTAssertThrowsError(try SWIMCodec.decode(bad))
        }
        XCTAssertThrowsError(try SWIMCodec.decodeState([0, 0xFF, 0xFF, 0xFF, 0xFF]))
    }
}
