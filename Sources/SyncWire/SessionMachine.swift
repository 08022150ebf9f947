@preconcurrency import Crypto
import SyncCore
import SyncSecurity

/// One session's protocol as a pure state machine: bytes in, directives out, no sockets and no
/// clock (Protocol/handshake.md and wire.md). The NIO shell feeds it what the socket reads and
/// carries out what it returns.
///
///     initiator                                  responder
///     "SYNCD/1" folderID[32]            ─────▶   looks the folder up; unknown → close
///     frame(Noise msg 1: e)             ─────▶
///                                       ◀─────   frame(Noise msg 2: e, ee, s, es)
///     frame(Noise msg 3: s, se, psk)    ─────▶   PSK wrong → authentication fails, close
///     frame(AES-GCM(message))*          ◀────▶   frame(AES-GCM(message))*
///
/// The psk is only mixed in message 3, so message 2 is readable by anyone who names the folder id:
/// it reveals the responder's device key and the features it offers (4 bytes: what this build of
/// syncd can do, nothing about the folder; Protocol/handshake.md, "Features"). Everything about the folder
/// travels after the handshake, under keys that need the PSK.
public struct SessionMachine {
    public static let magic: [UInt8] = Array("SYNCD/1".utf8)
    public static let prefaceSize = magic.count + 32
    /// Noise messages are at most 65535 bytes (Noise §3).
    public static let maxHandshakeFrame = 65535

    public struct Peer: Sendable, Equatable {
        public let folderID: [UInt8]
        public let staticKey: [UInt8]
        /// What this session may use: the features both sides offered.
        public var features: Features = []
        public var device: DeviceID { DeviceID(publicKey: staticKey) }
    }

    /// Optional parts of the protocol a side can use, offered in the handshake payloads
    /// (Protocol/handshake.md, "Features"): `features:u32` big-endian in message 2 (responder)
    /// and message 3 (initiator). A session uses a feature only when both sides offer it; an older
    /// peer sends empty payloads, which offer nothing, and ignores ours.
    public struct Features: OptionSet, Sendable, Equatable, CustomStringConvertible {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// Chunks may be answered with `data-deflated` (0x27, Protocol/wire.md, "Compression").
        public static let deflate = Features(rawValue: 1)

        /// The payload that offers them (empty for none, as an older version sends).
        var payload: [UInt8] { rawValue == 0 ? [] : [UInt8(rawValue >> 24), UInt8((rawValue >> 16) & 0xFF), UInt8((rawValue >> 8) & 0xFF), UInt8(rawValue & 0xFF)] }

        /// What a peer's payload offers: empty → none; otherwise its first 4 bytes (later versions
        /// may append more, which this one ignores). 1 to 3 bytes is malformed.
        init?(payload: [UInt8]) {
            if payload.isEmpty { self = []; return }
            guard payload.count >= 4 else { return nil }
            self.init(rawValue: payload.prefix(4).reduce(0) { $0 << 8 | UInt32($1) })
        }

        public var description: String { "0x" + String(rawValue, radix: 16) }
    }

    public enum Directive: Sendable, Equatable {
        /// Bytes to write to the socket, framed and encrypted as needed.
        case send([UInt8])
        case established(Peer)
        case deliver(SessionMessage)
        /// End the session (after writing whatever `send`s came before).
        case close(Failure)
    }

    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        case badPreface
        case unknownFolder(String)
        case handshakeFailed(String)
        case wire(WireError)
        case closedByPeer(String)
        case local(String)

        public var description: String {
            switch self {
            case .badPreface: "not a syncd session (bad preface)"
            case .unknownFolder(let id): "peer asked for folder \(id), which this device does not hold"
            case .handshakeFailed(let why): "handshake failed: \(why) (wrong folder secret?)"
            case .wire(let e): "\(e)"
            case .closedByPeer(let why): "peer closed the session: \(why)"
            case .local(let why): why
            }
        }
    }

    enum State {
        case awaitingPreface
        case handshaking(NoiseHandshake, folderID: [UInt8])
        case established(TransportCipher, Peer)
        case closed
    }

    private var state: State
    private var frames = FrameDecoder(maxFrameSize: SessionMachine.maxHandshakeFrame)
    private var preface: [UInt8] = []
    private let staticKey: Curve25519.KeyAgreement.PrivateKey
    private let folders: [[UInt8]: [UInt8]]
    private let initiatorFolder: [UInt8]?
    /// What this side offers.
    private let features: Features
    /// What the peer offered (from its handshake payload).
    private var peerFeatures: Features = []

    /// Dials a peer for `folderID`, whose session PSK is `psk`; `features` are offered.
    public init(initiatorFor folderID: [UInt8], psk: [UInt8], staticKey: Curve25519.KeyAgreement.PrivateKey,
                features: Features = []) {
        self.staticKey = staticKey
        self.features = features
        self.folders = [folderID: psk]
        self.initiatorFolder = folderID
        self.state = .handshaking(NoiseHandshake(role: .initiator, prologue: Self.prologue(folderID), psk: psk,
                                                 staticKey: staticKey), folderID: folderID)
    }

    /// Answers a connection; `folders` maps each public folder id this device holds to its PSK;
    /// `features` are offered.
    public init(responderFor folders: [[UInt8]: [UInt8]], staticKey: Curve25519.KeyAgreement.PrivateKey,
                features: Features = []) {
        self.staticKey = staticKey
        self.features = features
        self.folders = folders
        self.initiatorFolder = nil
        self.state = .awaitingPreface
    }

    /// The prologue binds the protocol version and the folder: a peer that means another folder
    /// or another version derives other keys and fails the handshake.
    static func prologue(_ folderID: [UInt8]) -> [UInt8] { Array("syncd/1".utf8) + folderID }

    public var isEstablished: Bool { if case .established = state { true } else { false } }
    public var isClosed: Bool { if case .closed = state { true } else { false } }

    /// The initiator's opening bytes: preface and Noise message 1. Empty for a responder.
    public mutating func start() -> [Directive] {
        guard let folderID = initiatorFolder, case .handshaking(var noise, _) = state else { return [] }
        do {
            let message1 = try noise.writeMessage(payload: [])
            state = .handshaking(noise, folderID: folderID)
            return [.send(Self.magic + folderID + FrameDecoder.encode(message1))]
        } catch {
            return fail(.handshakeFailed("\(error)"))
        }
    }

    /// Feeds bytes read from the socket.
    public mutating func receive(_ bytes: [UInt8]) -> [Directive] {
        var input = bytes[...]
        var out: [Directive] = []
        if case .awaitingPreface = state {
            let need = Self.prefaceSize - preface.count
            preface += input.prefix(need)
            input = input.dropFirst(need)
            guard preface.count == Self.prefaceSize else {
                return preface.starts(with: Self.magic.prefix(preface.count)) ? [] : fail(.badPreface)
            }
            guard preface.starts(with: Self.magic) else { return fail(.badPreface) }
            let folderID = Array(preface.suffix(32))
            guard let psk = folders[folderID] else { return fail(.unknownFolder(Base32.encode(folderID))) }
            state = .handshaking(NoiseHandshake(role: .responder, prologue: Self.prologue(folderID), psk: psk,
                                                staticKey: staticKey), folderID: folderID)
        }
        if case .closed = state { return [] }
        frames.feed(input)
        while true {
            let frame: [UInt8]
            do {
                guard let next = try frames.next() else { break }
                frame = next
            } catch {
                return out + fail(.wire(error))
            }
            out += handle(frame)
            if case .closed = state { break }
        }
        return out
    }

    /// Encrypts and frames a message; nothing before the session is established.
    public mutating func send(_ message: SessionMessage) -> [Directive] {
        guard case .established(var cipher, let peer) = state else { return [] }
        let body = message.encoded
        guard body.count <= TransportCipher.maxPlaintext else { return fail(.local("message of \(body.count) bytes is too large")) }
        let frame = FrameDecoder.encode(cipher.seal(body))
        state = .established(cipher, peer)
        return [.send(frame)]
    }

    /// Closes with a reason the peer is told, if the session got that far.
    public mutating func close(_ reason: String) -> [Directive] {
        let goodbye = send(.close(reason))
        state = .closed
        return goodbye + [.close(.local(reason))]
    }

    private mutating func handle(_ frame: [UInt8]) -> [Directive] {
        switch state {
        case .awaitingPreface, .closed:
            return []
        case .handshaking(var noise, let folderID):
            do {
                let payload = try noise.readMessage(frame)
                // Message 1's payload is readable by anyone (no PSK, no DH yet): nothing is in it.
                // Messages 2 and 3 carry each side's features.
                let isMessage1 = initiatorFolder == nil && !noise.isComplete
                if !isMessage1 {
                    guard let offered = Features(payload: payload) else { return fail(.handshakeFailed("malformed features payload")) }
                    peerFeatures = offered
                }
                var out: [Directive] = []
                if !noise.isComplete {
                    // The responder answers message 1 with message 2; the initiator message 2 with 3.
                    out.append(.send(FrameDecoder.encode(try noise.writeMessage(payload: features.payload))))
                }
                guard noise.isComplete else {
                    state = .handshaking(noise, folderID: folderID)
                    return out
                }
                return out + establish(noise, folderID: folderID)
            } catch {
                return fail(.handshakeFailed("\(error)"))
            }
        case .established(var cipher, let peer):
            do {
                let message = try SessionMessage(decoding: try cipher.open(frame))
                state = .established(cipher, peer)
                if case .close(let why) = message { return fail(.closedByPeer(why)) }
                return [.deliver(message)]
            } catch {
                return fail(.wire(error))
            }
        }
    }

    private mutating func establish(_ noise: NoiseHandshake, folderID: [UInt8]) -> [Directive] {
        guard let remote = noise.remoteStaticKey, let keys = try? noise.split() else {
            return fail(.handshakeFailed("incomplete handshake state"))
        }
        let peer = Peer(folderID: folderID, staticKey: remote, features: features.intersection(peerFeatures))
        state = .established(TransportCipher(sendKey: keys.sendKey, receiveKey: keys.receiveKey), peer)
        frames.maxFrameSize = FrameDecoder.defaultMaxFrameSize
        return [.established(peer)]
    }

    private mutating func fail(_ failure: Failure) -> [Directive] {
        state = .closed
        return [.close(failure)]
    }
}
