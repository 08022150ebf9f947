@preconcurrency import Crypto
import Foundation
@testable import SyncSecurity
import XCTest

final class NoiseTests: XCTestCase {
    typealias PrivateKey = Curve25519.KeyAgreement.PrivateKey

    // MARK: - Published vector

    /// The Noise wiki's test-vector format (github.com/noiseprotocol/noise_wiki/wiki/Test-vectors).
    struct VectorFile: Decodable {
        let source: String
        let vectors: [Vector]
    }

    struct Vector: Decodable {
        let protocolName: String
        let initPrologue, initStatic, initEphemeral: String
        let respPrologue, respStatic, respEphemeral: String
        let initPsks, respPsks: [String]
        let handshakeHash: String?
        let messages: [Message]

        struct Message: Decodable {
            let payload, ciphertext: String
        }
    }

    func loadVectors() throws -> VectorFile {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "noise_xxpsk3", withExtension: "json",
                                                  subdirectory: "Vectors"))
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(VectorFile.self, from: Data(contentsOf: url))
    }

    /// cacophony's vector: all three handshake messages byte for byte, the handshake hash, both
    /// learned static keys, and the transport messages that follow under the split keys.
    func test_xxpsk3_shouldMatchPublishedVector() throws {
        let file = try loadVectors()
        XCTAssertTrue(file.source.contains("cacophony"))
        XCTAssertEqual(file.vectors.count, 1)
        var transportChecked = 0
        for vector in file.vectors {
            XCTAssertEqual(vector.protocolName, NoiseHandshake.protocolName)
            XCTAssertEqual(vector.initPsks.count, 1, "XXpsk3 takes exactly one PSK")
            XCTAssertEqual(vector.respPsks.count, 1)
            var initiator = NoiseHandshake(role: .initiator, prologue: bytes(vector.initPrologue),
                                           psk: bytes(vector.initPsks[0]), staticKey: try key(vector.initStatic),
                                           ephemeralKey: try key(vector.initEphemeral))
            var responder = NoiseHandshake(role: .responder, prologue: bytes(vector.respPrologue),
                                           psk: bytes(vector.respPsks[0]), staticKey: try key(vector.respStatic),
                                           ephemeralKey: try key(vector.respEphemeral))

            // Handshake: messages alternate initiator, responder, initiator.
            for (index, message) in vector.messages.prefix(3).enumerated() {
                let payload = bytes(message.payload)
                let initiatorSends = index % 2 == 0
                let wire = initiatorSends ? try initiator.writeMessage(payload: payload)
                                          : try responder.writeMessage(payload: payload)
                XCTAssertEqual(hex(wire), message.ciphertext, "handshake message \(index + 1)")
                let read = initiatorSends ? try responder.readMessage(wire) : try initiator.readMessage(wire)
                XCTAssertEqual(read, payload, "handshake message \(index + 1) payload")
            }
            XCTAssertTrue(initiator.isComplete)
            XCTAssertTrue(responder.isComplete)
            if let expected = vector.handshakeHash {
                XCTAssertEqual(hex(initiator.handshakeHash), expected)
                XCTAssertEqual(hex(responder.handshakeHash), expected)
            }
            XCTAssertEqual(initiator.remoteStaticKey, Array(try key(vector.respStatic).publicKey.rawRepresentation))
            XCTAssertEqual(responder.remoteStaticKey, Array(try key(vector.initStatic).publicKey.rawRepresentation))

            // Transport: the alternation continues (message 4 is the responder's), nonces count from 0.
            let initiatorKeys = try initiator.split()
            let responderKeys = try responder.split()
            var initiatorSend = try NoiseCipherState(key: initiatorKeys.sendKey)
            var initiatorReceive = try NoiseCipherState(key: initiatorKeys.receiveKey)
            var responderSend = try NoiseCipherState(key: responderKeys.sendKey)
            var responderReceive = try NoiseCipherState(key: responderKeys.receiveKey)
            for (index, message) in vector.messages.enumerated().dropFirst(3) {
                let payload = bytes(message.payload)
                if index % 2 == 0 {
                    let wire = try initiatorSend.encrypt(ad: [], plaintext: payload)
                    XCTAssertEqual(hex(wire), message.ciphertext, "transport message \(index + 1)")
                    XCTAssertEqual(try responderReceive.decrypt(ad: [], ciphertext: wire), payload)
                } else {
                    let wire = try responderSend.encrypt(ad: [], plaintext: payload)
                    XCTAssertEqual(hex(wire), message.ciphertext, "transport message \(index + 1)")
                    XCTAssertEqual(try initiatorReceive.decrypt(ad: [], ciphertext: wire), payload)
                }
                transportChecked += 1
            }
        }
        XCTAssertEqual(transportChecked, 3)
    }

    // MARK: - Round trip

    func test_roundTrip_shouldAuthenticateBothSidesAndCrossMatchKeys() throws {
        let initiatorStatic = PrivateKey(), responderStatic = PrivateKey()
        let psk = randomBytes(32), prologue = Array("syncd/1".utf8) + randomBytes(32)
        var initiator = NoiseHandshake(role: .initiator, prologue: prologue, psk: psk, staticKey: initiatorStatic)
        var responder = NoiseHandshake(role: .responder, prologue: prologue, psk: psk, staticKey: responderStatic)

        XCTAssertNil(responder.remoteStaticKey)
        XCTAssertEqual(try responder.readMessage(try initiator.writeMessage(payload: [1])), [1])
        XCTAssertEqual(try initiator.readMessage(try responder.writeMessage(payload: [2, 2])), [2, 2])
        XCTAssertEqual(initiator.remoteStaticKey, Array(responderStatic.publicKey.rawRepresentation))
        XCTAssertNil(responder.remoteStaticKey, "the initiator's static key arrives in message 3")
        XCTAssertFalse(initiator.isComplete)
        XCTAssertThrowsError(try initiator.split()) { XCTAssertEqual($0 as? NoiseError, .wrongState) }
        XCTAssertEqual(try responder.readMessage(try initiator.writeMessage(payload: [3, 3, 3])), [3, 3, 3])

        XCTAssertTrue(initiator.isComplete && responder.isComplete)
        XCTAssertEqual(initiator.handshakeHash, responder.handshakeHash)
        XCTAssertEqual(responder.remoteStaticKey, Array(initiatorStatic.publicKey.rawRepresentation))
        let a = try initiator.split(), b = try responder.split()
        XCTAssertEqual(a.sendKey, b.receiveKey)
        XCTAssertEqual(a.receiveKey, b.sendKey)
        XCTAssertNotEqual(a.sendKey, a.receiveKey)

        var aSend = try NoiseCipherState(key: a.sendKey), bReceive = try NoiseCipherState(key: b.receiveKey)
        var bSend = try NoiseCipherState(key: b.sendKey), aReceive = try NoiseCipherState(key: a.receiveKey)
        XCTAssertEqual(try bReceive.decrypt(ad: [9], ciphertext: try aSend.encrypt(ad: [9], plaintext: [4])), [4])
        XCTAssertEqual(try aReceive.decrypt(ad: [], ciphertext: try bSend.encrypt(ad: [], plaintext: [5])), [5])
    }

    /// With a PSK every payload is encrypted, message 1's included (§9.2): 48 / 96 / 64 bytes when empty.
    func test_messageSizes_shouldMatchTheDocumentedLayout() throws {
        var (initiator, responder) = makePair()
        let m1 = try initiator.writeMessage(payload: [])
        XCTAssertEqual(m1.count, 32 + 16)
        _ = try responder.readMessage(m1)
        let m2 = try responder.writeMessage(payload: [7, 7, 7])
        XCTAssertEqual(m2.count, 32 + 48 + 3 + 16)
        _ = try initiator.readMessage(m2)
        let m3 = try initiator.writeMessage(payload: [])
        XCTAssertEqual(m3.count, 48 + 16)
        _ = try responder.readMessage(m3)
        XCTAssertTrue(responder.isComplete)
    }

    // MARK: - Wrong secrets

    /// A peer without the folder secret gets through messages 1 and 2, but the responder refuses message 3.
    func test_wrongPSK_shouldFailResponderOnMessageThreeWithoutPayload() throws {
        var (initiator, responder) = makePair(initiatorPSK: randomBytes(32), responderPSK: randomBytes(32))
        _ = try responder.readMessage(try initiator.writeMessage(payload: []))
        _ = try initiator.readMessage(try responder.writeMessage(payload: []))
        let m3 = try initiator.writeMessage(payload: Array("hello from a stranger".utf8))
        XCTAssertTrue(initiator.isComplete, "the initiator only notices later, when transport fails")

        var returned: [UInt8]?
        XCTAssertThrowsError(returned = try responder.readMessage(m3)) {
            XCTAssertEqual($0 as? NoiseError, .authenticationFailed)
        }
        XCTAssertNil(returned, "no payload bytes from a failed message 3")
        XCTAssertFalse(responder.isComplete)
        XCTAssertNil(responder.remoteStaticKey, "nothing learned in a failed handshake is exposed")
        XCTAssertThrowsError(try responder.split()) { XCTAssertEqual($0 as? NoiseError, .wrongState) }
        XCTAssertThrowsError(try responder.readMessage(m3)) { XCTAssertEqual($0 as? NoiseError, .wrongState) }
    }

    func test_differentPrologue_shouldFailMessageOne() throws {
        var (initiator, responder) = makePair(initiatorPrologue: Array("syncd/1 A".utf8),
                                              responderPrologue: Array("syncd/1 B".utf8))
        let m1 = try initiator.writeMessage(payload: [])
        XCTAssertThrowsError(try responder.readMessage(m1)) {
            XCTAssertEqual($0 as? NoiseError, .authenticationFailed, "h (the AD) covers the prologue")
        }
        XCTAssertThrowsError(try responder.writeMessage(payload: [])) {
            XCTAssertEqual($0 as? NoiseError, .wrongState)
        }
    }

    func test_pskOfWrongLength_shouldThrowNotTrap() throws {
        var (initiator, _) = makePair(initiatorPSK: randomBytes(31))
        XCTAssertThrowsError(try initiator.writeMessage(payload: [])) {
            XCTAssertEqual($0 as? NoiseError, .malformed("PSK must be 32 bytes"))
        }
        XCTAssertThrowsError(try initiator.writeMessage(payload: [])) { XCTAssertEqual($0 as? NoiseError, .wrongState) }
    }

    // MARK: - Hostile input

    func test_truncatedMessageTwo_shouldThrowAtEveryLength() throws {
        var (initiator, responder) = makePair()
        _ = try responder.readMessage(try initiator.writeMessage(payload: []))
        let m2 = try responder.writeMessage(payload: [1, 2, 3, 4, 5])
        XCTAssertEqual(m2.count, 101)
        for length in 0..<m2.count {
            var copy = initiator
            XCTAssertThrowsError(try copy.readMessage(Array(m2.prefix(length))), "length \(length)") { error in
                // Short of e ‖ enc(s) ‖ tag (96 bytes) is malformed; longer cuts into the payload and fail its tag.
                let expected: NoiseError = length < 96 ? .malformed("") : .authenticationFailed
                XCTAssertTrue(sameCase(error as? NoiseError, expected), "length \(length): \(error)")
            }
            XCTAssertThrowsError(try copy.readMessage(m2)) { XCTAssertEqual($0 as? NoiseError, .wrongState) }
            XCTAssertThrowsError(try copy.writeMessage(payload: [])) { XCTAssertEqual($0 as? NoiseError, .wrongState) }
        }
        XCTAssertEqual(try initiator.readMessage(m2), [1, 2, 3, 4, 5], "the untouched original still works")
    }

    func test_garbledMessageTwo_shouldFailAuthenticationAtEveryByte() throws {
        var (initiator, responder) = makePair()
        _ = try responder.readMessage(try initiator.writeMessage(payload: []))
        let m2 = try responder.writeMessage(payload: [1, 2, 3])
        for position in m2.indices {
            var garbled = m2
            garbled[position] ^= 0x80
            var copy = initiator
            var returned: [UInt8]?
            XCTAssertThrowsError(returned = try copy.readMessage(garbled), "byte \(position)") {
                XCTAssertEqual($0 as? NoiseError, .authenticationFailed, "byte \(position)")
            }
            XCTAssertNil(returned)
            XCTAssertNil(copy.remoteStaticKey)
            XCTAssertThrowsError(try copy.split()) { XCTAssertEqual($0 as? NoiseError, .wrongState) }
        }
    }

    func test_messagesOutOfTurn_shouldBeWrongState() throws {
        var (initiator, responder) = makePair()
        let m1 = try initiator.writeMessage(payload: [])

        var fresh = makePair().initiator
        XCTAssertThrowsError(try fresh.readMessage(m1)) { XCTAssertEqual($0 as? NoiseError, .wrongState) }
        XCTAssertThrowsError(try fresh.writeMessage(payload: [])) { XCTAssertEqual($0 as? NoiseError, .wrongState) }

        var firstWriter = makePair().responder
        XCTAssertThrowsError(try firstWriter.writeMessage(payload: [])) {
            XCTAssertEqual($0 as? NoiseError, .wrongState)
        }

        // Message 1 replayed into the initiator that sent it: read as message 2, it is far too short.
        var replayed = initiator
        XCTAssertThrowsError(try replayed.readMessage(m1)) {
            XCTAssertTrue(sameCase($0 as? NoiseError, .malformed("")))
        }

        _ = try responder.readMessage(m1)
        var twice = responder
        XCTAssertThrowsError(try twice.readMessage(m1)) { XCTAssertEqual($0 as? NoiseError, .wrongState) }

        _ = try initiator.readMessage(try responder.writeMessage(payload: []))
        _ = try responder.readMessage(try initiator.writeMessage(payload: []))
        XCTAssertTrue(initiator.isComplete)
        XCTAssertThrowsError(try initiator.readMessage(m1)) { XCTAssertEqual($0 as? NoiseError, .wrongState) }
        XCTAssertFalse(initiator.isComplete, "a call after completion is an error too, and kills the handshake")
        XCTAssertThrowsError(try initiator.split()) { XCTAssertEqual($0 as? NoiseError, .wrongState) }
    }

    func test_emptyAndOversizedInput_shouldBeMalformed() throws {
        var (initiator, responder) = makePair()
        var empty = responder
        XCTAssertThrowsError(try empty.readMessage([])) { XCTAssertTrue(sameCase($0 as? NoiseError, .malformed(""))) }
        XCTAssertThrowsError(try empty.readMessage([])) { XCTAssertEqual($0 as? NoiseError, .wrongState) }

        var oversized = responder
        XCTAssertThrowsError(try oversized.readMessage([UInt8](repeating: 0x41, count: 65536))) {
            XCTAssertEqual($0 as? NoiseError, .malformed("message is 65536 bytes, over 65535"))
        }
        var atLimit = responder
        XCTAssertThrowsError(try atLimit.readMessage([UInt8](repeating: 0x41, count: 65535))) {
            XCTAssertEqual($0 as? NoiseError, .authenticationFailed, "65535 bytes passes the size check")
        }

        var tooBig = initiator
        XCTAssertThrowsError(try tooBig.writeMessage(payload: [UInt8](repeating: 1, count: 65535 - 48 + 1))) {
            XCTAssertEqual($0 as? NoiseError, .malformed("message would be 65536 bytes, over 65535"))
        }
        XCTAssertThrowsError(try tooBig.writeMessage(payload: [])) { XCTAssertEqual($0 as? NoiseError, .wrongState) }

        let largest = [UInt8](repeating: 1, count: 65535 - 48)
        let m1 = try initiator.writeMessage(payload: largest)
        XCTAssertEqual(m1.count, 65535)
        XCTAssertEqual(try responder.readMessage(m1), largest)
    }

    /// An all-zero (low-order) ephemeral key gives an all-zero DH output, which Noise accepts (§12.1):
    /// no trap, and the handshake still cannot complete without the PSK.
    func test_lowOrderEphemeral_shouldNotCrash() throws {
        let prologue: [UInt8] = [1, 2]
        var forger = NoiseSymmetricState(protocolName: NoiseHandshake.protocolName)
        forger.mixHash(prologue)
        let zero = [UInt8](repeating: 0, count: 32)
        forger.mixHash(zero)
        forger.mixKey(zero)
        let forged = zero + (try forger.encryptAndHash([]))

        var responder = makePair(responderPrologue: prologue).responder
        XCTAssertEqual(try responder.readMessage(forged), [])
        let m2 = try responder.writeMessage(payload: [])
        XCTAssertEqual(m2.count, 96)
        XCTAssertThrowsError(try responder.readMessage([UInt8](repeating: 0, count: 64))) {
            XCTAssertEqual($0 as? NoiseError, .authenticationFailed)
        }
    }

    // MARK: - CipherState

    func test_cipherState_shouldUseBigEndianNoncesAndStopBeforeTheReservedOne() throws {
        XCTAssertEqual(Array(NoiseCipherState.gcmNonce(0x0102_0304_0506_0708)), [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
        let key = randomBytes(32)
        var sender = try NoiseCipherState(key: key, nonce: .max - 1)
        var receiver = try NoiseCipherState(key: key, nonce: .max - 1)
        let last = try sender.encrypt(ad: [], plaintext: [1])
        XCTAssertThrowsError(try sender.encrypt(ad: [], plaintext: [2])) {
            XCTAssertEqual($0 as? NoiseError, .nonceExhausted)
        }
        var tampered = last
        tampered[0] ^= 1
        XCTAssertThrowsError(try receiver.decrypt(ad: [], ciphertext: tampered)) {
            XCTAssertEqual($0 as? NoiseError, .authenticationFailed)
        }
        XCTAssertEqual(receiver.nonce, .max - 1, "a failed decryption does not consume the nonce")
        XCTAssertThrowsError(try receiver.decrypt(ad: [], ciphertext: [1, 2, 3])) {
            XCTAssertTrue(sameCase($0 as? NoiseError, .malformed("")))
        }
        XCTAssertEqual(try receiver.decrypt(ad: [], ciphertext: last), [1])
        XCTAssertThrowsError(try receiver.decrypt(ad: [], ciphertext: last)) {
            XCTAssertEqual($0 as? NoiseError, .nonceExhausted)
        }
        XCTAssertThrowsError(try NoiseCipherState(key: randomBytes(16))) {
            XCTAssertTrue(sameCase($0 as? NoiseError, .malformed("")))
        }
    }

    // MARK: - Helpers

    private func makePair(initiatorPSK: [UInt8]? = nil, responderPSK: [UInt8]? = nil,
                          initiatorPrologue: [UInt8] = [1, 2], responderPrologue: [UInt8] = [1, 2])
        -> (initiator: NoiseHandshake, responder: NoiseHandshake) {
        let psk = [UInt8](repeating: 7, count: 32)
        return (NoiseHandshake(role: .initiator, prologue: initiatorPrologue, psk: initiatorPSK ?? psk,
                               staticKey: PrivateKey()),
                NoiseHandshake(role: .responder, prologue: responderPrologue, psk: responderPSK ?? psk,
                               staticKey: PrivateKey()))
    }

    private func sameCase(_ error: NoiseError?, _ expected: NoiseError) -> Bool {
        switch (error, expected) {
        case (.malformed?, .malformed): true
        default: error == expected
        }
    }

    private func key(_ hexText: String) throws -> PrivateKey {
        try PrivateKey(rawRepresentation: bytes(hexText))
    }

    private func bytes(_ hexText: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = hexText.startIndex
        while index < hexText.endIndex {
            let next = hexText.index(index, offsetBy: 2)
            out.append(UInt8(hexText[index..<next], radix: 16)!)
            index = next
        }
        return out
    }

    private func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }

    private func randomBytes(_ count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255) }
    }
}
