@preconcurrency import Crypto
import Foundation
@testable import SyncSecurity
import XCTest

final class NoiseTests: XCTestCase {
    struct Vector: Decodable {
        let protocol_name, init_prologue, init_static, init_ephemeral: String
        let resp_prologue, resp_static, resp_ephemeral, handshake_hash: String
        let init_psks, resp_psks: [String]
        let messages: [Message]
        struct Message: Decodable { let payload, ciphertext: String }
    }

    struct VectorFile: Decodable { let source: String, vectors: [Vector] }

    func key(_ hexText: String) throws -> Curve25519.KeyAgreement.PrivateKey {
        try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: hex(hexText))
    }

    /// cacophony's published vector: every handshake message byte for byte, the handshake hash,
    /// and the transport messages that follow under the split keys.
    func test_xxpsk3_shouldMatchPublishedVector() throws {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "noise_xxpsk3", withExtension: "json", subdirectory: "Vectors"))
        let file = try JSONDecoder().decode(VectorFile.self, from: Data(contentsOf: url))
        XCTAssertFalse(file.vectors.isEmpty)
        for v in file.vectors {
            XCTAssertEqual(v.protocol_name, NoiseHandshake.protocolName)
            var initiator = NoiseHandshake(role: .initiator, prologue: hex(v.init_prologue), psk: hex(v.init_psks[0]),
                                           staticKey: try key(v.init_static), ephemeralKey: try key(v.init_ephemeral))
            var responder = NoiseHandshake(role: .responder, prologue: hex(v.resp_prologue), psk: hex(v.resp_psks[0]),
                                           staticKey: try key(v.resp_static), ephemeralKey: try key(v.resp_ephemeral))
            for (i, m) in v.messages.prefix(3).enumerated() {
                var (writer, reader) = i % 2 == 0 ? (initiator, responder) : (responder, initiator)
                let wire = try writer.writeMessage(payload: hex(m.payload))
                XCTAssertEqual(wire, hex(m.ciphertext), "handshake message \(i + 1)")
                XCTAssertEqual(try reader.readMessage(wire), hex(m.payload))
                (initiator, responder) = i % 2 == 0 ? (writer, reader) : (reader, writer)
            }
            XCTAssertTrue(initiator.isComplete && responder.isComplete)
            XCTAssertEqual(initiator.handshakeHash, hex(v.handshake_hash))
            XCTAssertEqual(responder.handshakeHash, hex(v.handshake_hash))
            XCTAssertEqual(initiator.remoteStaticKey, Array(try key(v.resp_static).publicKey.rawRepresentation))
            XCTAssertEqual(responder.remoteStaticKey, Array(try key(v.init_static).publicKey.rawRepresentation))
            // Transport: after the handshake the responder speaks first (the vector alternates on).
            var (c1, c2) = initiator.splitStates()
            for (i, m) in v.messages.dropFirst(3).enumerated() {
                let responderSends = i % 2 == 0
                let sealed = responderSends ? try c2.encrypt(ad: [], plaintext: hex(m.payload))
                                            : try c1.encrypt(ad: [], plaintext: hex(m.payload))
                XCTAssertEqual(sealed, hex(m.ciphertext), "transport message \(i + 1)")
            }
            // And the oriented keys the session layer uses agree across the two sides.
            let a = try initiator.split(), b = try responder.split()
            XCTAssertEqual(a.sendKey, b.receiveKey)
            XCTAssertEqual(a.receiveKey, b.sendKey)
            XCTAssertEqual(a.sendKey, c1.key)
        }
    }

    private func pair(psk: [UInt8] = Array(repeating: 7, count: 32), responderPSK: [UInt8]? = nil,
                      prologue: [UInt8] = [1, 2], responderPrologue: [UInt8]? = nil)
        -> (NoiseHandshake, NoiseHandshake, Curve25519.KeyAgreement.PrivateKey, Curve25519.KeyAgreement.PrivateKey) {
        let si = Curve25519.KeyAgreement.PrivateKey(), sr = Curve25519.KeyAgreement.PrivateKey()
        return (NoiseHandshake(role: .initiator, prologue: prologue, psk: psk, staticKey: si),
                NoiseHandshake(role: .responder, prologue: responderPrologue ?? prologue, psk: responderPSK ?? psk, staticKey: sr),
                si, sr)
    }

    func test_roundTrip_shouldAuthenticateBothStaticKeys() throws {
        var (i, r, si, sr) = pair()
        XCTAssertEqual(try r.readMessage(try i.writeMessage(payload: [])), [])
        XCTAssertEqual(try i.readMessage(try r.writeMessage(payload: [9])), [9])
        XCTAssertEqual(try r.readMessage(try i.writeMessage(payload: Array("hello".utf8))), Array("hello".utf8))
        XCTAssertTrue(i.isComplete && r.isComplete)
        XCTAssertEqual(i.handshakeHash, r.handshakeHash)
        XCTAssertEqual(i.remoteStaticKey, Array(sr.publicKey.rawRepresentation))
        XCTAssertEqual(r.remoteStaticKey, Array(si.publicKey.rawRepresentation))
        let a = try i.split(), b = try r.split()
        XCTAssertEqual(a.sendKey, b.receiveKey)
        XCTAssertEqual(a.receiveKey, b.sendKey)
        XCTAssertNotEqual(a.sendKey, a.receiveKey)
    }

    /// A peer without the secret: the responder refuses message 3 and returns nothing from it.
    func test_wrongPSK_shouldFailOnMessageThree() throws {
        var (i, r, _, _) = pair(psk: Array(repeating: 7, count: 32), responderPSK: Array(repeating: 8, count: 32))
        _ = try r.readMessage(try i.writeMessage(payload: []))
        _ = try i.readMessage(try r.writeMessage(payload: []))
        let m3 = try i.writeMessage(payload: Array("secret hello".utf8))
        XCTAssertThrowsError(try r.readMessage(m3)) { XCTAssertEqual($0 as? NoiseError, .authenticationFailed) }
        XCTAssertFalse(r.isComplete)
        XCTAssertNil(r.remoteStaticKey, "nothing learned from a failed handshake is kept")
        XCTAssertThrowsError(try r.split())
    }

    func test_differentPrologue_shouldFail() throws {
        var (i, r, _, _) = pair(prologue: Array("syncd/1 A".utf8), responderPrologue: Array("syncd/1 B".utf8))
        // With a PSK, message 1's (empty) payload is already encrypted under a key bound to the prologue.
        XCTAssertThrowsError(try r.readMessage(try i.writeMessage(payload: []))) {
            XCTAssertEqual($0 as? NoiseError, .authenticationFailed)
        }
    }

    func test_hostileMessages_shouldThrowNeverCrash() throws {
        // Truncated message 2.
        do {
            var (i, r, _, _) = pair()
            _ = try r.readMessage(try i.writeMessage(payload: []))
            let m2 = try r.writeMessage(payload: [])
            XCTAssertThrowsError(try i.readMessage(Array(m2.prefix(40)))) { XCTAssertEqual($0 as? NoiseError, .malformed("message too short")) }
            XCTAssertThrowsError(try i.readMessage(m2)) { XCTAssertEqual($0 as? NoiseError, .wrongState, "dead after a failure") }
            XCTAssertThrowsError(try i.writeMessage(payload: [])) { XCTAssertEqual($0 as? NoiseError, .wrongState) }
        }
        // One flipped bit in message 2's encrypted static key.
        do {
            var (i, r, _, _) = pair()
            _ = try r.readMessage(try i.writeMessage(payload: []))
            var m2 = try r.writeMessage(payload: [])
            m2[40] ^= 1
            XCTAssertThrowsError(try i.readMessage(m2)) { XCTAssertEqual($0 as? NoiseError, .authenticationFailed) }
        }
        // Message 1 replayed into the initiator, empty and oversized input, reading before writing.
        do {
            var (i, r, _, _) = pair()
            let m1 = try i.writeMessage(payload: [])
            XCTAssertThrowsError(try i.readMessage(m1))
            XCTAssertThrowsError(try r.readMessage([])) { XCTAssertEqual($0 as? NoiseError, .malformed("message too short")) }
            var r2 = pair().1
            XCTAssertThrowsError(try r2.readMessage([UInt8](repeating: 1, count: 70_000)))
            var r3 = pair().1
            XCTAssertThrowsError(try r3.writeMessage(payload: [])) { XCTAssertEqual($0 as? NoiseError, .wrongState) }
        }
    }
}
