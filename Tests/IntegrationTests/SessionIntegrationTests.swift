@preconcurrency import Crypto
import Foundation
import SyncCore
import SyncSecurity
import SyncWire
import XCTest

/// Hostile peers against a real daemon: each bad session closes, with a clear log line, while the
/// daemon and an honest session carry on.
final class SessionIntegrationTests: XCTestCase {
    func addFolder(_ h: DaemonHarness, _ name: String, secret: String? = nil) throws -> FolderSecret {
        let r = try h.cli(["add", h.root + "/" + name, "--secret"] + (secret.map { [$0] } ?? []))
        XCTAssertEqual(r.status, 0, r.stderr)
        if let secret { return try FolderSecret(parsing: secret) }
        return try FolderSecret(parsing: String(r.stdout.split(whereSeparator: \.isWhitespace).last ?? ""))
    }

    func manifestKeys(_ secret: FolderSecret, signer: Curve25519.Signing.PrivateKey? = nil) throws -> ManifestKeys {
        let k = secret.keys
        return ManifestKeys(folderID: k.folderID, publicKey: try .init(rawRepresentation: k.folderPublicKey),
                            manifestKey: k.manifestKey, signingKey: signer ?? k.signingKey)
    }

    func entries(_ name: String, sequence: Int64, chunks: [ChunkRef] = []) -> [FileEntry] {
        [FileEntry(path: name, metadata: FileMetadata(kind: .file, size: Int64(chunks.reduce(0) { $0 + Int($1.size) }), mode: 0o644,
                                                      mtimeNs: 1, ctimeNs: 0, inode: 0),
                   version: VersionVector().incremented(by: 99), sequence: sequence, chunks: chunks)]
    }

    func waitForLog(_ h: DaemonHarness, _ text: String, file: StaticString = #filePath, line: UInt = #line) {
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline && !h.daemonLog.contains(text) { usleep(20_000) }
        XCTAssertTrue(h.daemonLog.contains(text), "log lacks \"\(text)\":\n\(h.daemonLog.suffix(3000))", file: file, line: line)
    }

    func test_hostilePeers_closeOnlyTheirSession_andDaemonServesOthers() throws {
        let h = try DaemonHarness(name: "hostile")
        try h.startDaemon()
        let secret = try addFolder(h, "wiki")
        let keys = secret.keys
        let port = try h.sessionPort()
        func peer(psk: [UInt8]? = nil, folder: [UInt8]? = nil) throws -> PeerClient {
            try PeerClient(port: port, folderID: folder ?? keys.folderID, psk: psk ?? keys.sessionPSK)
        }

        // An honest session: handshake, the daemon's hello, ping/pong. It stays open throughout.
        let honest = try peer()
        XCTAssertTrue(honest.handshake())
        guard case .message(.hello(let hello)) = honest.next() else { return XCTFail("no hello") }
        XCTAssertEqual(hello.access, .readWrite)
        XCTAssertTrue(honest.isAlive(1))

        // Wrong secret: same public folder id, another PSK. The handshake fails; nothing is learned.
        // (The initiator finishes its side with message 3; the responder is the one that refuses.)
        let stranger = try peer(psk: FolderSecret.generate().keys.sessionPSK)
        _ = stranger.handshake()
        XCTAssertEqual(stranger.next(), .closed, "not even the daemon's hello")
        waitForLog(h, "handshake failed")
        XCTAssertTrue(honest.isAlive(2))

        // A folder this daemon does not hold, and bytes that are not syncd at all.
        XCTAssertFalse(try peer(folder: FolderSecret.generate().keys.folderID).handshake())
        waitForLog(h, "which this device does not hold")
        let http = try peer()
        http.sendRaw(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        XCTAssertNil(http.readRaw())
        waitForLog(h, "bad preface")

        // Established sessions sending garbled, oversized, replayed, reordered and truncated frames.
        let garbled = try peer()
        XCTAssertTrue(garbled.handshake())
        var frame = garbled.seal(.ping(7))
        frame[frame.count - 3] ^= 0x10
        garbled.sendRaw(frame)
        XCTAssertEqual(garbled.next(where: { _ in false }), .closed)
        waitForLog(h, "failed authentication")

        let oversized = try peer()
        XCTAssertTrue(oversized.handshake())
        oversized.sendRaw([0x10, 0, 0, 0] + [UInt8](repeating: 0, count: 64))
        XCTAssertEqual(oversized.next(where: { _ in false }), .closed)
        waitForLog(h, "exceeds the")

        let replay = try peer()
        XCTAssertTrue(replay.handshake())
        let ping = replay.seal(.ping(8))
        replay.sendRaw(ping)
        XCTAssertEqual(replay.next(where: { if case .pong = $0 { true } else { false } }), .message(.pong(8)))
        replay.sendRaw(ping)
        XCTAssertEqual(replay.next(where: { _ in false }), .closed, "the replayed frame ends the session")

        let reorder = try peer()
        XCTAssertTrue(reorder.handshake())
        let first = reorder.seal(.ping(1)), second = reorder.seal(.ping(2))
        reorder.sendRaw(second + first)
        XCTAssertEqual(reorder.next(where: { if case .pong = $0 { true } else { false } }), .closed)

        let truncated = try peer()
        XCTAssertTrue(truncated.handshake())
        truncated.sendRaw(Array(truncated.seal(.ping(9)).dropLast(5)))
        close(truncated.fd)   // hang up mid-frame
        XCTAssertTrue(honest.isAlive(3))

        // Manifests: one signed by a key that is not the folder's is refused.
        let forger = try peer()
        XCTAssertTrue(forger.handshake())
        let forged = try SealedManifest.seal(entries("evil.txt", sequence: 5), origin: 7, indexID: 1,
                                             keys: manifestKeys(secret, signer: Curve25519.Signing.PrivateKey()))
        forger.send(.index(forged.encoded))
        XCTAssertEqual(forger.next(where: { if case .indexAck = $0 { true } else { false } }), .closed)
        waitForLog(h, "not signed by the folder key")

        // A genuine manifest is acknowledged; an older one replayed over it is refused, on this
        // session and after a reconnect.
        let newer = try SealedManifest.seal(entries("a.txt", sequence: 10), origin: 7, indexID: 1, keys: manifestKeys(secret))
        let older = try SealedManifest.seal(entries("a.txt", sequence: 4), origin: 7, indexID: 1, keys: manifestKeys(secret))
        honest.send(.index(newer.encoded))
        XCTAssertEqual(honest.next(where: { if case .indexAck = $0 { true } else { false } }),
                       .message(.indexAck(origin: 7, indexID: 1, sequence: 10)))
        let rollback = try peer()
        XCTAssertTrue(rollback.handshake())
        rollback.send(.index(older.encoded))
        XCTAssertEqual(rollback.next(where: { if case .indexAck = $0 { true } else { false } }), .closed)
        waitForLog(h, "replayed or older")
        let replayed = try peer()
        XCTAssertTrue(replayed.handshake())
        replayed.send(.index(newer.encoded))
        XCTAssertEqual(replayed.next(where: { if case .indexAck = $0 { true } else { false } }), .closed)

        // After all that: the honest session, a new session and the control socket all work.
        XCTAssertTrue(honest.isAlive(4))
        let late = try peer()
        XCTAssertTrue(late.handshake())
        XCTAssertTrue(late.isAlive(5))
        let status = try h.status()
        XCTAssertEqual(status.folders.count, 1)
        XCTAssertEqual(try h.cli(["status", "--json"]).stdout.contains("\"remoteManifests\":1"), true)
    }

    /// A storage peer keeps sealed manifests and chunks, verifies and serves them, and its disk
    /// holds neither the file name nor a byte of the content.
    func test_storagePeer_storesAndServesSealedData_withoutPlaintext() throws {
        let h = try DaemonHarness(name: "storage")
        try h.startDaemon()
        let writer = FolderSecret.generate()
        _ = try addFolder(h, "vault", secret: writer.storage().text)
        let keys = writer.keys
        let port = try h.sessionPort()

        let name = "quarterly-secret-plans-\(UInt32.random(in: 0...UInt32.max)).txt"
        let content = Array(String(repeating: "The eagle lands at dawn; bring the blue folder. ", count: 200).utf8)
        let id = ChunkHasher(key: keys.chunkIDKey!).chunkID(content)
        let sealedChunk = try SealedChunk.seal(content, id: id, chunkKey: keys.chunkKey!, signer: keys.signingKey!)
        let manifest = try SealedManifest.seal(entries(name, sequence: 1, chunks: [ChunkRef(id: id, size: UInt32(content.count))]),
                                               origin: 3, indexID: 1, keys: manifestKeys(writer))

        let client = try PeerClient(port: port, folderID: keys.folderID, psk: keys.sessionPSK)
        XCTAssertTrue(client.handshake())
        guard case .message(.hello(let hello)) = client.next() else { return XCTFail("no hello") }
        XCTAssertEqual(hello.access, .storage)
        client.send(.store(sealedChunk.encoded))
        client.send(.index(manifest.encoded))
        XCTAssertEqual(client.next(where: { if case .indexAck = $0 { true } else { false } }),
                       .message(.indexAck(origin: 3, indexID: 1, sequence: 1)))
        client.send(.request(id: 9, chunk: id, size: UInt32(content.count)))
        guard case .message(.data(9, let served)) = client.next(where: { if case .data = $0 { true } else { false } }) else {
            return XCTFail("chunk not served")
        }
        XCTAssertEqual(served, sealedChunk.encoded)
        XCTAssertEqual(try SealedChunk(decoding: served).open(chunkKey: keys.chunkKey!, ids: ChunkHasher(key: keys.chunkIDKey!),
                                                              folderKey: .init(rawRepresentation: keys.folderPublicKey)), content)
        // A sealed chunk that is not signed by the folder key is refused.
        let forged = try SealedChunk.seal(content, id: id, chunkKey: keys.chunkKey!, signer: .init())
        client.send(.store(forged.encoded))
        XCTAssertEqual(client.next(where: { _ in false }), .closed)
        h.stopDaemon()

        // Search every byte the storage peer wrote (index, WAL, sealed files) for the plaintext.
        let needles = [Array(name.utf8), Array(content.prefix(24)), Array("eagle lands".utf8)]
        var searched = 0
        let enumerator = FileManager.default.enumerator(atPath: h.root)!
        while let rel = enumerator.nextObject() as? String {
            let path = h.root + "/" + rel
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue, !rel.hasSuffix("daemon.log"),
                  let data = FileManager.default.contents(atPath: path) else { continue }
            searched += data.count
            for needle in needles {
                XCTAssertNil(data.range(of: Data(needle)), "\(rel) contains plaintext \(String(decoding: needle, as: UTF8.self))")
            }
        }
        XCTAssertGreaterThan(searched, content.count, "the sealed data was on disk to search")
        XCTAssertTrue(FileManager.default.fileExists(atPath: h.root + "/vault/.syncd/sealed/" + Hex.encode(id.bytes)))
    }
}
