@preconcurrency import Crypto
import SyncCore
import SyncSecurity
@testable import SyncWire
import XCTest

final class SessionMachineTests: XCTestCase {
    let folderID = [UInt8](repeating: 0xAB, count: 32)
    let psk = [UInt8](repeating: 0x11, count: 32)
    let initiatorKey = Curve25519.KeyAgreement.PrivateKey()
    let responderKey = Curve25519.KeyAgreement.PrivateKey()

    /// Bytes each side wrote, and everything else the directives said.
    struct Outcome {
        var sent: [UInt8] = []
        var established: SessionMachine.Peer?
        var delivered: [SessionMessage] = []
        var closed: SessionMachine.Failure?
    }

    @discardableResult
    func apply(_ directives: [SessionMachine.Directive], to outcome: inout Outcome) -> [UInt8] {
        var bytes: [UInt8] = []
        for d in directives {
            switch d {
            case .send(let b): bytes += b; outcome.sent += b
            case .established(let p): outcome.established = p
            case .deliver(let m): outcome.delivered.append(m)
            case .close(let f): outcome.closed = f
            }
        }
        return bytes
    }

    func machines(responderPSK: [UInt8]? = nil, responderFolder: [UInt8]? = nil,
                  features: (initiator: SessionMachine.Features, responder: SessionMachine.Features) = ([], [])) -> (SessionMachine, SessionMachine) {
        (SessionMachine(initiatorFor: folderID, psk: psk, staticKey: initiatorKey, features: features.initiator),
         SessionMachine(responderFor: [responderFolder ?? folderID: responderPSK ?? psk], staticKey: responderKey,
                        features: features.responder))
    }

    /// Runs the handshake by shuttling bytes until neither side has anything to say.
    func connect(_ i: inout SessionMachine, _ r: inout SessionMachine, chunk: Int = .max) -> (Outcome, Outcome) {
        var oi = Outcome(), or = Outcome()
        var toResponder = apply(i.start(), to: &oi), toInitiator: [UInt8] = []
        while !toResponder.isEmpty || !toInitiator.isEmpty {
            for piece in toResponder.chunked(chunk) { toInitiator += apply(r.receive(Array(piece)), to: &or) }
            toResponder = []
            for piece in toInitiator.chunked(chunk) { toResponder += apply(i.receive(Array(piece)), to: &oi) }
            toInitiator = []
        }
        return (oi, or)
    }

    func test_handshake_shouldEstablishBothSidesAndCarryMessages() {
        var (i, r) = machines()
        let (oi, or) = connect(&i, &r)
        XCTAssertEqual(oi.established?.staticKey, Array(responderKey.publicKey.rawRepresentation))
        XCTAssertEqual(or.established?.staticKey, Array(initiatorKey.publicKey.rawRepresentation))
        XCTAssertEqual(or.established?.folderID, folderID)
        XCTAssertNil(oi.closed)
        XCTAssertNil(or.closed)
        var o = Outcome()
        let hello = SessionMessage.hello(.init(access: .readWrite, indexID: 5, sequence: 9))
        apply(r.receive(apply(i.send(hello), to: &o) + apply(i.send(.ping(3)), to: &o)), to: &o)
        XCTAssertEqual(o.delivered, [hello, .ping(3)])
        var back = Outcome()
        apply(i.receive(apply(r.send(.pong(3)), to: &back)), to: &back)
        XCTAssertEqual(back.delivered, [.pong(3)])
    }

    func test_handshake_shouldSurviveOneByteReads() {
        var (i, r) = machines()
        let (oi, or) = connect(&i, &r, chunk: 1)
        XCTAssertNotNil(oi.established)
        XCTAssertNotNil(or.established)
    }

    /// A peer without the secret: the responder fails message 3, delivers nothing, and the
    /// initiator never receives a byte after message 2.
    func test_wrongSecret_shouldFailTheHandshakeAndDeliverNothing() {
        var (i, r) = machines(responderPSK: [UInt8](repeating: 0x22, count: 32))
        let (oi, or) = connect(&i, &r)
        guard case .handshakeFailed = or.closed else { return XCTFail("responder: \(String(describing: or.closed))") }
        XCTAssertNil(or.established)
        XCTAssertTrue(or.delivered.isEmpty)
        XCTAssertEqual(or.sent.count, 4 + 32 + 48 + 16, "message 2 only: e, encrypted s, empty payload's tag")
        XCTAssertTrue(r.isClosed)
        XCTAssertTrue(oi.delivered.isEmpty)
    }

    func test_unknownFolder_andBadPreface_shouldClose() {
        var (_, r) = machines(responderFolder: [UInt8](repeating: 0xCD, count: 32))
        var i = SessionMachine(initiatorFor: folderID, psk: psk, staticKey: initiatorKey)
        var o = Outcome()
        apply(r.receive(apply(i.start(), to: &o)), to: &o)
        XCTAssertEqual(o.closed, .unknownFolder(Base32.encode(folderID)))
        XCTAssertTrue(o.sent.count == SessionMachine.prefaceSize + 4 + 48, "the responder sent nothing")

        var (_, r2) = machines()
        var o2 = Outcome()
        apply(r2.receive(Array("GET / HTTP/1.1\r\n".utf8)), to: &o2)
        XCTAssertEqual(o2.closed, .badPreface, "refused at the first wrong byte, not after 39")
    }

    func test_oversizedHandshakeFrame_shouldCloseBeforeBuffering() {
        var (_, r) = machines()
        var o = Outcome()
        apply(r.receive(SessionMachine.magic + folderID + [0x00, 0x01, 0x11, 0x70]), to: &o)   // 70,000 bytes
        XCTAssertEqual(o.closed, .wire(.frameTooLarge(70_000, limit: 65535)))
    }

    func test_establishedSession_shouldCloseOnGarbledReplayedReorderedOrOversizedFrames() {
        func established() -> (SessionMachine, SessionMachine) {
            var (i, r) = machines()
            _ = connect(&i, &r)
            return (i, r)
        }
        var o = Outcome()
        // Garbled.
        var (i, r) = established()
        var frame = apply(i.send(.ping(1)), to: &o)
        frame[10] ^= 0x40
        var g = Outcome()
        apply(r.receive(frame), to: &g)
        XCTAssertEqual(g.closed, .wire(.authenticationFailed))
        XCTAssertTrue(g.delivered.isEmpty)
        XCTAssertTrue(r.receive(apply(i.send(.ping(2)), to: &o)).isEmpty, "a closed session ignores everything")
        // Replayed.
        (i, r) = established()
        frame = apply(i.send(.ping(1)), to: &o)
        var p = Outcome()
        apply(r.receive(frame + frame), to: &p)
        XCTAssertEqual(p.delivered, [.ping(1)])
        XCTAssertEqual(p.closed, .wire(.authenticationFailed))
        // Reordered.
        (i, r) = established()
        let first = apply(i.send(.ping(1)), to: &o), second = apply(i.send(.ping(2)), to: &o)
        var q = Outcome()
        apply(r.receive(second + first), to: &q)
        XCTAssertTrue(q.delivered.isEmpty)
        XCTAssertEqual(q.closed, .wire(.authenticationFailed))
        // Oversized length prefix.
        (i, r) = established()
        var s = Outcome()
        apply(r.receive([0x7F, 0xFF, 0xFF, 0xFF]), to: &s)
        XCTAssertEqual(s.closed, .wire(.frameTooLarge(0x7FFF_FFFF, limit: FrameDecoder.defaultMaxFrameSize)))
        // Truncated: a partial frame delivers nothing and waits.
        (i, r) = established()
        frame = apply(i.send(.ping(1)), to: &o)
        var t = Outcome()
        apply(r.receive(Array(frame.dropLast(3))), to: &t)
        XCTAssertTrue(t.delivered.isEmpty)
        XCTAssertNil(t.closed)
    }

    func test_closeMessage_shouldEndTheSessionWithTheReason() {
        var (i, r) = machines()
        _ = connect(&i, &r)
        var o = Outcome()
        apply(r.receive(apply(i.close("shutting down"), to: &o)), to: &o)
        XCTAssertEqual(o.closed, .closedByPeer("shutting down"))
        XCTAssertTrue(i.isClosed && r.isClosed)
    }

    func test_features_shouldBeUsed_onlyWhenBothSidesOfferThem() {
        for (mine, theirs, agreed): (SessionMachine.Features, SessionMachine.Features, SessionMachine.Features) in [
            (.deflate, .deflate, .deflate), (.deflate, [], []), ([], .deflate, []), ([], [], []),
            (SessionMachine.Features(rawValue: 0xFFFF_FFFF), .deflate, .deflate),   // unknown bits are ignored
        ] {
            var (i, r) = machines(features: (mine, theirs))
            let (oi, or) = connect(&i, &r)
            XCTAssertEqual(oi.established?.features, agreed, "\(mine) \(theirs)")
            XCTAssertEqual(or.established?.features, agreed, "\(mine) \(theirs)")
        }
    }

    /// An older peer sends empty handshake payloads (and ignores ours): no feature, session as before.
    func test_features_fromAnOlderPeer_areNone_andItsSessionWorks() throws {
        var noise = NoiseHandshake(role: .initiator, prologue: SessionMachine.prologue(folderID), psk: psk, staticKey: initiatorKey)
        var r = SessionMachine(responderFor: [folderID: psk], staticKey: responderKey, features: .deflate)
        var or = Outcome()
        let message2 = apply(r.receive(SessionMachine.magic + folderID + FrameDecoder.encode(try noise.writeMessage(payload: []))), to: &or)
        var decoder = FrameDecoder()
        decoder.feed(message2[...])
        let payload2 = try noise.readMessage(try XCTUnwrap(try decoder.next()))
        XCTAssertEqual(payload2, [0, 0, 0, 1], "the responder offers deflate in message 2's payload")
        apply(r.receive(FrameDecoder.encode(try noise.writeMessage(payload: []))), to: &or)
        XCTAssertEqual(or.established?.features, [])
        XCTAssertNil(or.closed)
    }

    func test_features_payloadOfOneToThreeBytes_shouldFailTheHandshake() throws {
        var noise = NoiseHandshake(role: .initiator, prologue: SessionMachine.prologue(folderID), psk: psk, staticKey: initiatorKey)
        var r = SessionMachine(responderFor: [folderID: psk], staticKey: responderKey, features: .deflate)
        var or = Outcome()
        let message2 = apply(r.receive(SessionMachine.magic + folderID + FrameDecoder.encode(try noise.writeMessage(payload: []))), to: &or)
        var decoder = FrameDecoder()
        decoder.feed(message2[...])
        _ = try noise.readMessage(try XCTUnwrap(try decoder.next()))
        apply(r.receive(FrameDecoder.encode(try noise.writeMessage(payload: [0, 1]))), to: &or)
        XCTAssertNil(or.established)
        guard case .handshakeFailed? = or.closed else { return XCTFail("\(String(describing: or.closed))") }
    }

    func test_dataDeflated_shouldRoundTrip_andRejectBadSizesAndEmptyBodies() throws {
        let m = SessionMessage.dataDeflated(id: 7, rawSize: 65536, bytes: [1, 2, 3])
        XCTAssertEqual(m.encoded, [0x27, 0, 0, 0, 7, 0, 1, 0, 0, 1, 2, 3])
        XCTAssertEqual(try SessionMessage(decoding: m.encoded), m)
        XCTAssertEqual(try SessionMessage(decoding: SessionMessage.dataDeflated(id: 1, rawSize: 1 << 20, bytes: [0]).encoded),
                       .dataDeflated(id: 1, rawSize: 1 << 20, bytes: [0]))
        for bad: [UInt8] in [
            [0x27], [0x27, 0, 0, 0, 7], [0x27, 0, 0, 0, 7, 0, 1, 0],   // truncated header
            [0x27, 0, 0, 0, 7, 0, 1, 0, 0],                           // no deflate bytes
            [0x27, 0, 0, 0, 7, 0, 0, 0, 0, 1, 2],                     // rawSize 0
            [0x27, 0, 0, 0, 7, 0, 0x10, 0, 1, 1, 2],                  // rawSize 1 MiB + 1
            [0x27, 0, 0, 0, 7, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2],
        ] {
            XCTAssertThrowsError(try SessionMessage(decoding: bad), "\(bad)")
        }
    }

    func test_messages_shouldRoundTripAndRejectMalformedBytes() throws {
        let id = ChunkID(w0: 1, w1: 2, w2: 3, w3: 4)
        let all: [SessionMessage] = [
            .hello(.init(access: .storage, indexID: 1, sequence: 2)), .ping(7), .pong(8), .index([1, 2, 3]),
            .indexAck(origin: 9, indexID: 10, sequence: 11), .request(id: 1, chunk: id, size: 65536),
            .data(id: 1, bytes: [5, 6]), .requestFailed(id: 1, reason: 2), .store([9]), .close("bye"),
            .have([id]), .have(Array(repeating: id, count: SessionMessage.maxHave)),
            .dataDeflated(id: 2, rawSize: 100, bytes: [7]),
        ]
        for m in all { XCTAssertEqual(try SessionMessage(decoding: m.encoded), m) }
        XCTAssertEqual(SessionMessage.have([id]).encoded, [0x24, 0, 1] + id.bytes, "Protocol/wire.md: have")
        for bad: [UInt8] in [[], [0x55], [0x02, 0, 0], [0x02] + [UInt8](repeating: 0, count: 9), [0x01, 9] + [UInt8](repeating: 0, count: 16),
                             [0x10], [0x20, 0, 0, 0, 1] + id.bytes + [0, 0, 0, 0],
                             [0x24, 0, 0], [0x24, 0, 2] + id.bytes, [0x24, 0, 1] + id.bytes + [0],
                             [0x24, 0x04, 0x01] + [UInt8](repeating: 1, count: 32 * 1025)] {
            XCTAssertThrowsError(try SessionMessage(decoding: bad), "\(bad)")
        }
    }
}

extension Array {
    func chunked(_ size: Int) -> [ArraySlice<Element>] {
        guard size < count else { return isEmpty ? [] : [self[...]] }
        return stride(from: 0, to: count, by: size).map { self[$0..<Swift.min($0 + size, count)] }
    }
}
