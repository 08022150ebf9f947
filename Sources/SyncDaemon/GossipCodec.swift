@preconcurrency import Crypto
import Foundation
import SyncCore
import SyncGossip
import SyncSecurity

/// The optional cluster key (`--gossip-key`): every UDP packet and TCP push/pull body is
/// `0x01 ‖ nonce[12] ‖ AES-256-GCM(key, nonce, ad = 0x01, body) ‖ tag[16]`. Without a key bodies
/// travel as they are, prefixed by `0x00`. A packet that does not open is dropped.
struct GossipCipher: Sendable {
    let key: SymmetricKey?

    /// 32 bytes as 64 hex characters or base64.
    init(keyText: String?) throws {
        guard let text = keyText else { key = nil; return }
        let bytes: [UInt8]?
        if text.count == 64, let hex = Self.hex(text) { bytes = hex } else { bytes = Data(base64Encoded: text).map { Array($0) } }
        guard let bytes, bytes.count == 32 else {
            throw GossipError("--gossip-key must be 32 bytes, as 64 hex characters or base64 (try: openssl rand -base64 32)")
        }
        key = SymmetricKey(data: bytes)
    }

    func seal(_ body: [UInt8]) -> [UInt8] {
        guard let key else { return [0] + body }
        let box = try! AES.GCM.seal(body, using: key, authenticating: [UInt8(1)])
        return [1] + Array(box.nonce) + Array(box.ciphertext) + Array(box.tag)
    }

    func open(_ packet: [UInt8]) -> [UInt8]? {
        guard let first = packet.first else { return nil }
        switch (first, key) {
        case (0, nil): return Array(packet.dropFirst())
        case (1, let key?):
            guard packet.count >= 29, let box = try? AES.GCM.SealedBox(nonce: .init(data: packet[1..<13]),
                                                                     ciphertext: packet[13..<(packet.count - 16)],
                                                                     tag: packet.suffix(16)),
                  let plain = try? AES.GCM.open(box, using: key, authenticating: [UInt8(1)]) else { return nil }
            return Array(plain)
        default: return nil   // keyed vs unkeyed mismatch: a stranger's pool
        }
    }

    static func hex(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        var it = text.utf8.makeIterator()
        while let hi = it.next(), let lo = it.next() {
            guard let b = UInt8(String(decoding: [hi, lo], as: UTF8.self), radix: 16) else { return nil }
            out.append(b)
        }
        return out
    }
}

struct GossipError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// What a member announces (Protocol/gossip.md): device id, session address, and per folder its
/// public id and current sequence. Never a secret.
struct MemberMeta: Equatable, Sendable {
    struct Folder: Equatable, Sendable {
        var folderID: [UInt8]
        var sequence: UInt64
    }

    var device: [UInt8]          // 32-byte device id
    var folders: [Folder]

    /// At most this many folders fit the metadata budget (SWIMCodec.maxMetaBytes).
    static let maxFolders = 11

    var encoded: [UInt8] {
        var out = [UInt8(1)] + device + [UInt8(min(folders.count, Self.maxFolders))]
        for f in folders.prefix(Self.maxFolders) {
            out += f.folderID
            for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: f.sequence >> UInt64(s))) }
        }
        return out
    }

    init(device: [UInt8], folders: [Folder]) { self.device = device; self.folders = folders }

    init?(decoding bytes: [UInt8]) {
        guard bytes.count >= 34, bytes[0] == 1 else { return nil }
        device = Array(bytes[1..<33])
        let count = Int(bytes[33])
        guard bytes.count == 34 + count * 40 else { return nil }
        folders = (0..<count).map { i in
            let at = 34 + i * 40
            return Folder(folderID: Array(bytes[at..<at + 32]),
                          sequence: bytes[at + 32..<at + 40].reduce(0) { $0 << 8 | UInt64($1) })
        }
    }
}
