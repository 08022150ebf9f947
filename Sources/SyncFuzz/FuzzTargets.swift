@preconcurrency import Crypto
import SyncCore
import SyncSecurity
import SyncWire

/// Each decoder that reads bytes from the network, the disk or the user, as a function that must
/// never crash, hang or allocate without bound on any input. Used by the seeded-mutation pass in
/// `swift test` and by the libFuzzer entry point `syncd-fuzz` (Docs/Fuzzing.md).
public enum FuzzTargets {
    public struct Target: Sendable {
        public let name: String
        /// Valid inputs to start mutating from.
        public let seeds: @Sendable () -> [[UInt8]]
        public let run: @Sendable ([UInt8]) -> Void
    }

    public static let all: [Target] = [frames, transport, chunkList, versionVector, folderSecret, deviceID, sealedManifest, manifestEntries, sealedChunk,
                                         sessionMessage, handshakeResponder, noiseMessage2]

    public static func named(_ name: String) -> Target? { all.first { $0.name == name } }

    static let frames = Target(name: "frames", seeds: {
        [FrameDecoder.encode([1, 2, 3]) + FrameDecoder.encode(Array(repeating: 9, count: 40))]
    }) { input in
        var d = FrameDecoder(maxFrameSize: 4096)
        // Feed in two pieces to exercise partial frames.
        let cut = input.isEmpty ? 0 : Int(input[0]) % (input.count + 1)
        d.feed(input[..<cut])
        do {
            while let f = try d.next() { precondition(!f.isEmpty && f.count <= 4096) }
            d.feed(input[cut...])
            while let f = try d.next() { precondition(!f.isEmpty && f.count <= 4096) }
        } catch {}
    }

    static let transportKey = [UInt8](repeating: 0x42, count: 32)

    static let transport = Target(name: "transport", seeds: {
        var c = TransportCipher(sendKey: transportKey, receiveKey: transportKey)
        return [c.seal(Array("hello".utf8))]
    }) { input in
        var c = TransportCipher(sendKey: transportKey, receiveKey: transportKey)
        _ = try? c.open(input)
    }

    static let chunkList = Target(name: "chunk-list", seeds: {
        [ChunkListCodec.encode([ChunkRef(id: ChunkID(w0: 1, w1: 2, w2: 3, w3: 4), size: 65536)])]
    }) { input in
        if let list = ChunkListCodec.decode(input) { precondition(ChunkListCodec.encode(list) == input) }
    }

    static let versionVector = Target(name: "version-vector", seeds: {
        [VersionVector().incremented(by: 5).incremented(by: 9).encoded]
    }) { input in
        if let v = VersionVector(encoded: input) { _ = v.compare(v.incremented(by: 1)) }
    }

    static let folderSecret = Target(name: "folder-secret", seeds: {
        let w = FolderSecret.generate()
        return [Array(w.text.utf8), Array(w.storage().text.utf8)]
    }) { input in
        if let s = try? FolderSecret(parsing: String(decoding: input, as: UTF8.self)) {
            precondition((try? FolderSecret(parsing: s.text)) == s)
        }
    }

    static let deviceID = Target(name: "device-id", seeds: {
        [Array(DeviceID(publicKey: Array(repeating: 1, count: 32)).description.utf8)]
    }) { input in
        if let id = try? DeviceID(parsing: String(decoding: input, as: UTF8.self)) {
            precondition((try? DeviceID(parsing: id.description)) == id)
        }
    }
}

extension FuzzTargets {
    static let sampleEntries: [FileEntry] = [
        FileEntry(path: "a/b.txt", metadata: FileMetadata(kind: .file, size: 3, mode: 0o644, mtimeNs: 1, ctimeNs: 0, inode: 0),
                  version: VersionVector().incremented(by: 1), sequence: 1, chunks: [ChunkRef(id: ChunkID(w0: 1, w1: 1, w2: 1, w3: 1), size: 3)]),
        FileEntry(path: "l", metadata: FileMetadata(kind: .symlink, size: 1, mode: 0o777, mtimeNs: 1, ctimeNs: 0, inode: 0, symlinkTarget: "a"),
                  version: VersionVector().incremented(by: 1), sequence: 2),
    ]

    static let sealedManifest = Target(name: "sealed-manifest", seeds: {
        [SealedManifest(header: .init(folderID: Array(repeating: 1, count: 32), origin: 1, indexID: 2, firstSequence: 1, lastSequence: 2),
                        nonce: Array(repeating: 0, count: 12), ciphertext: ManifestCodec.encode(sampleEntries) + Array(repeating: 0, count: 16),
                        signature: Array(repeating: 0, count: 64)).encoded]
    }) { input in
        if let m = try? SealedManifest(decoding: input) { precondition((try? SealedManifest(decoding: m.encoded)) == m) }
    }

    static let manifestEntries = Target(name: "manifest-entries", seeds: { [ManifestCodec.encode(sampleEntries)] }) { input in
        if let e = try? ManifestCodec.decode(input) { precondition((try? ManifestCodec.decode(ManifestCodec.encode(e))) == e) }
    }
}

extension FuzzTargets {
    static let sealedChunk = Target(name: "sealed-chunk", seeds: {
        [SealedChunk.magic + Array(repeating: 3, count: 32) + [0, 0, 0, 24] + Array(repeating: 1, count: 24) + Array(repeating: 2, count: 64)]
    }) { input in
        if let c = try? SealedChunk(decoding: input) { precondition((try? SealedChunk(decoding: c.encoded)) == c) }
    }
}

extension FuzzTargets {
    static let sessionMessage = Target(name: "session-message", seeds: {
        [SessionMessage.hello(.init(access: .readOnly, indexID: 1, sequence: 2)).encoded, SessionMessage.ping(1).encoded,
         SessionMessage.indexAck(origin: 1, indexID: 2, sequence: 3).encoded,
         SessionMessage.digest(.init(sequence: 4, liveCount: 5, hash: Array(repeating: 6, count: 32))).encoded, SessionMessage.close("bye").encoded,
         SessionMessage.request(id: 1, chunk: ChunkID(w0: 1, w1: 2, w2: 3, w3: 4), size: 100).encoded,
         SessionMessage.have([ChunkID(w0: 1, w1: 2, w2: 3, w3: 4)]).encoded,
         SessionMessage.benchRequest(id: 2, size: 1 << 20).encoded, SessionMessage.benchData(id: 3, bytes: [1, 2, 3]).encoded]
    }) { input in
        if let m = try? SessionMessage(decoding: input) { precondition((try? SessionMessage(decoding: m.encoded)) == m) }
    }

    // Fixed keys so mutated handshake messages stay close to meaningful ones.
    static let fuzzFolder = [UInt8](repeating: 0x5A, count: 32)
    static let fuzzPSK = [UInt8](repeating: 0x33, count: 32)
    static let initiatorStatic = try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: [UInt8](repeating: 1, count: 32))
    static let responderStatic = try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: [UInt8](repeating: 2, count: 32))
    static let initiatorEphemeral = try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: [UInt8](repeating: 3, count: 32))
    static let responderEphemeral = try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: [UInt8](repeating: 4, count: 32))

    /// A responder fed whatever a stranger sends: preface, handshake frames, anything.
    static let handshakeResponder = Target(name: "handshake-responder", seeds: {
        var i = SessionMachine(initiatorFor: fuzzFolder, psk: fuzzPSK, staticKey: initiatorStatic)
        return i.start().compactMap { if case .send(let b) = $0 { b } else { nil } }
    }) { input in
        var r = SessionMachine(responderFor: [fuzzFolder: fuzzPSK], staticKey: responderStatic)
        let cut = input.isEmpty ? 0 : Int(input[0]) % (input.count + 1)
        for piece in [Array(input[..<cut]), Array(input[cut...])] {
            for d in r.receive(piece) { if case .established = d { preconditionFailure("established without the PSK's message 3") } }
        }
    }

    /// The initiator reading message 2 (after its own message 1).
    static let noiseMessage2 = Target(name: "noise-message2", seeds: {
        var i = afterMessage1
        var r = NoiseHandshake(role: .responder, prologue: [], psk: fuzzPSK, staticKey: responderStatic, ephemeralKey: responderEphemeral)
        _ = try? r.readMessage(message1)
        return [(try? r.writeMessage(payload: [1, 2, 3])) ?? []].filter { (try? i.readMessage($0)) != nil }
    }) { input in
        var i = afterMessage1
        if (try? i.readMessage(input)) != nil { precondition(i.remoteStaticKey?.count == 32) }
    }

    static let (afterMessage1, message1): (NoiseHandshake, [UInt8]) = {
        var i = NoiseHandshake(role: .initiator, prologue: [], psk: fuzzPSK, staticKey: initiatorStatic, ephemeralKey: initiatorEphemeral)
        let m1 = try! i.writeMessage(payload: [])
        return (i, m1)
    }()
}

/// A deterministic mutator (xorshift64*): bit flips, byte sets, inserts, deletes, splices of
/// interesting values and truncation — enough to walk decoders through their error paths.
public struct Mutator {
    private var state: UInt64

    public init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }

    public mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }

    public mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(next() % UInt64(n)) }

    private static let interesting: [[UInt8]] = [[0], [0xFF], [0x7F], [0x80], [0, 0, 0, 0], [0xFF, 0xFF, 0xFF, 0xFF],
                                                  [0, 0, 0x10, 0], [0, 1, 0, 0], Array("-".utf8), Array("syncd-".utf8)]

    public mutating func mutate(_ input: [UInt8]) -> [UInt8] {
        var out = input
        for _ in 0...below(4) {
            switch below(7) {
            case 0 where !out.isEmpty: out[below(out.count)] ^= UInt8(1 << below(8))
            case 1 where !out.isEmpty: out[below(out.count)] = UInt8(truncatingIfNeeded: next())
            case 2: out.insert(UInt8(truncatingIfNeeded: next()), at: below(out.count + 1))
            case 3 where !out.isEmpty: out.remove(at: below(out.count))
            case 4: out.insert(contentsOf: Self.interesting[below(Self.interesting.count)], at: below(out.count + 1))
            case 5 where !out.isEmpty: out.removeLast(below(out.count) + 1)
            default:
                if out.count > 1 {
                    let a = below(out.count), b = below(out.count)
                    out.swapAt(a, b)
                }
            }
        }
        return out
    }

    /// Runs `count` mutated inputs (plus the seeds and a few random blobs) through `target`.
    public static func run(_ target: FuzzTargets.Target, count: Int, seed: UInt64) {
        var m = Mutator(seed: seed)
        let seeds = target.seeds()
        for s in seeds { target.run(s) }
        var corpus = seeds
        for i in 0..<count {
            let base = corpus[m.below(corpus.count)]
            let input = i % 64 == 0 ? (0..<m.below(64)).map { _ in UInt8(truncatingIfNeeded: m.next()) } : m.mutate(base)
            target.run(input)
            if i % 997 == 0 && corpus.count < 64 { corpus.append(input) }
        }
    }
}
