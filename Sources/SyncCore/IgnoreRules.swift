/// `.syncignore`: gitignore's pattern language (gitignore(5)), applied to folder-relative paths.
///
/// - One pattern per line (LF or CRLF; a leading UTF-8 BOM is skipped). Blank lines and lines
///   starting with `#` are skipped; `\#` and `\!` start a pattern with a literal `#` or `!`.
///   Trailing spaces are dropped unless escaped (`\ `).
/// - `!pattern` re-includes what an earlier pattern excluded; the last matching line wins.
/// - A trailing `/` makes the pattern match directories only.
/// - A pattern with a `/` at its start or in its middle is anchored at the folder root and matched
///   segment by segment; otherwise it matches a name (the last path segment) at any depth.
/// - `*` is any run of characters except `/`, `?` one character except `/`, `\x` a literal `x`.
///   `[abc]`, `[a-z]`, `[[:digit:]]` (any POSIX class) match one character from a set, `[!a]` and
///   `[^a]` one character outside it; a `]` right after `[`, `[!` or `[^` is a member.
/// - `**` as a whole segment matches any number of segments: `**/foo` is `foo` at any depth,
///   `a/**/b` matches `a/b`, `a/x/b`, `a/x/y/b`, and a trailing `/**` matches everything inside
///   (not the directory itself). Other runs of asterisks act like a single `*`.
/// - A path inside an ignored directory is ignored whatever later lines say: as in git, a negation
///   cannot re-include a file whose parent directory is excluded, only the directory itself.
/// - The folder's own `.syncd` directory and everything in it is always ignored; no pattern can
///   re-include it.
///
/// Like git, matching is case-sensitive and byte-wise: a pattern is the bytes of its line and a
/// path is matched as the bytes of its name (paths arrive as `RelativePath` path text and are
/// decoded first), so a literal `café` matches exactly the name with the same bytes (NFC and NFD
/// spellings are different names), and `?` or a class matches one byte — one of the two bytes of
/// a UTF-8 `é`, or a whole Latin-1 one. A malformed pattern (an unterminated `[`, an unknown `[:class:]`, a trailing lone `\`) matches
/// nothing: its line is skipped. Only the folder's root `.syncignore` exists, so there is no
/// per-directory precedence.
public struct IgnoreRules: Sendable {
    public static let empty = IgnoreRules(parsing: "")

    private let rules: [Rule]

    public init(parsing text: String) {
        self.init(parsing: Array(text.utf8))
    }

    /// Parses the file's bytes as they are: a pattern that is not UTF-8 (a Latin-1 name) still
    /// matches the name with those bytes.
    public init(parsing file: [UInt8]) {
        var bytes = file[...]
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = bytes.dropFirst(3) }
        rules = bytes.split(separator: .newline).compactMap(Rule.init(line:))
    }

    /// Whether `path` (path text: folder-relative, `/`-separated, no leading slash) is ignored,
    /// itself or through an ignored ancestor directory. The folder root (`""`) never is.
    public func isIgnored(_ path: String, isDirectory: Bool) -> Bool {
        // Path text without a '%' is ASCII and its own bytes: only escaped names need decoding.
        if path.utf8.contains(.percent), let bytes = RelativePath.bytes(path) {
            return bytes.withUnsafeBufferPointer { isIgnored(bytes: $0[...], isDirectory: isDirectory) }
        }
        var path = path
        return path.withUTF8 { isIgnored(bytes: $0[...], isDirectory: isDirectory) }
    }

    private func isIgnored(bytes path: Text, isDirectory: Bool) -> Bool {
        if Self.isStateDirectory(path) { return true }
        guard !rules.isEmpty, !path.isEmpty else { return false }
        var nameStart = path.startIndex
        for index in path.indices where path[index] == .slash {
            if verdict(path[..<index], name: path[nameStart..<index], isDirectory: true) { return true }
            nameStart = index + 1
        }
        return verdict(path, name: path[nameStart...], isDirectory: isDirectory)
    }

    /// `.syncd` or anything below it.
    private static func isStateDirectory(_ path: Text) -> Bool {
        let state = ".syncd".utf8
        return path.starts(with: state)
            && (path.count == state.count || path[path.startIndex + state.count] == .slash)
    }

    /// The last matching rule's verdict on `path` alone (its ancestors are not considered).
    private func verdict(_ path: Text, name: Text, isDirectory: Bool) -> Bool {
        for rule in rules.reversed() where isDirectory || !rule.directoryOnly {
            if rule.matcher.matches(path: path, name: name) { return !rule.negated }
        }
        return false
    }
}

extension IgnoreRules {
    /// The path being matched, or a part of it, borrowed from the caller's string.
    typealias Text = Slice<UnsafeBufferPointer<UInt8>>

    /// One compiled line.
    struct Rule: Sendable {
        let negated: Bool
        let directoryOnly: Bool
        let matcher: Matcher

        /// Nil for blank lines, comments and malformed patterns.
        init?(line: ArraySlice<UInt8>) {
            var pattern = line
            if pattern.last == .carriageReturn { pattern.removeLast() }
            guard pattern.first != .hash else { return nil }
            pattern = Self.trimmingTrailingSpaces(pattern)
            negated = pattern.first == .bang
            if negated { pattern.removeFirst() }
            directoryOnly = pattern.last == .slash
            if directoryOnly { pattern.removeLast() }
            let anchored = pattern.contains(.slash)
            if pattern.first == .slash { pattern.removeFirst() }
            guard !pattern.isEmpty, let segments = Segment.parse(pattern) else { return nil }
            matcher = anchored ? .path(segments) : Matcher(basename: segments[0])
        }

        /// Drops trailing spaces; an escaped character (`\ ` included) is kept.
        private static func trimmingTrailingSpaces(_ line: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
            var end = line.startIndex
            var index = line.startIndex
            while index < line.endIndex {
                if line[index] == .backslash {
                    index = min(index + 2, line.endIndex)
                    end = index
                } else {
                    if line[index] != .space { end = index + 1 }
                    index += 1
                }
            }
            return line[..<end]
        }
    }

    /// A compiled pattern. Name-only literals (`node_modules`) and `*suffix` patterns (`*.o`), the
    /// common cases, skip the glob matcher.
    enum Matcher: Sendable {
        case name([UInt8])
        case suffix([UInt8])
        case basename(Glob)
        case path([Segment])

        init(basename segment: Segment) {
            guard case .glob(let glob) = segment else {
                self = .basename(Glob([.star]))   // a lone `**` is a plain `*` here
                return
            }
            if let literal = glob.literal() {
                self = .name(literal)
            } else if glob.tokens.first == .star, let suffix = glob.literal(droppingFirst: 1) {
                self = .suffix(suffix)
            } else {
                self = .basename(glob)
            }
        }

        func matches(path: Text, name: Text) -> Bool {
            switch self {
            case .name(let literal):
                return name.count == literal.count && name.elementsEqual(literal)
            case .suffix(let suffix):
                return name.count >= suffix.count && name.suffix(suffix.count).elementsEqual(suffix)
            case .basename(let glob):
                return glob.matches(name)
            case .path(let segments):
                return Self.matches(segments[...], path)
            }
        }

        /// Matches `pattern` against `path`, the rest of the path still to match (nil once all of
        /// it is consumed), one segment at a time.
        private static func matches(_ pattern: ArraySlice<Segment>, _ path: Text?) -> Bool {
            guard let segment = pattern.first else { return path == nil }
            let rest = pattern.dropFirst()
            switch segment {
            case .glob(let glob):
                guard let path else { return false }
                let end = path.firstIndex(of: .slash) ?? path.endIndex
                return glob.matches(path[..<end]) && matches(rest, end == path.endIndex ? nil : path[(end + 1)...])
            case .anyDepth:
                guard !rest.isEmpty else { return path != nil }   // trailing `/**`: at least one segment
                var candidate = path
                while let current = candidate {
                    if matches(rest, current) { return true }
                    candidate = current.firstIndex(of: .slash).map { current[($0 + 1)...] }
                }
                return false
            }
        }
    }

    /// One `/`-separated piece of a pattern.
    enum Segment: Sendable {
        case anyDepth   // `**`
        case glob(Glob)

        /// Splits `pattern` at unescaped `/` (`\/` too, as git's wildmatch does) and compiles each
        /// piece; nil when the pattern is malformed. A `/` inside a class stays in it, where it can
        /// never match.
        static func parse(_ pattern: ArraySlice<UInt8>) -> [Segment]? {
            var segments: [Segment] = []
            var tokens: [Token] = []
            var index = pattern.startIndex
            while index < pattern.endIndex {
                let byte = pattern[index]
                index += 1
                switch byte {
                case .slash:
                    segments.append(Segment(tokens))
                    tokens = []
                case .backslash:
                    guard index < pattern.endIndex else { return nil }
                    if pattern[index] == .slash {
                        segments.append(Segment(tokens))
                        tokens = []
                    } else {
                        tokens.append(.byte(pattern[index]))
                    }
                    index += 1
                case .star:
                    tokens.append(.star)
                case .question:
                    tokens.append(.any)
                case .openBracket:
                    guard let (set, end) = ByteSet.parseClass(pattern[index...]) else { return nil }
                    tokens.append(.set(set))
                    index = end
                default:
                    tokens.append(.byte(byte))
                }
            }
            segments.append(Segment(tokens))
            return segments
        }

        private init(_ tokens: [Token]) {
            self = tokens.count >= 2 && tokens.allSatisfy { $0 == .star } ? .anyDepth : .glob(Glob(tokens))
        }
    }

    enum Token: Sendable, Equatable {
        case byte(UInt8)
        case any        // `?`
        case star       // `*`
        case set(ByteSet)
    }

    /// A pattern for one path segment.
    struct Glob: Sendable {
        let tokens: [Token]

        /// Runs of `*` collapse into one.
        init(_ tokens: [Token]) {
            var collapsed: [Token] = []
            for token in tokens where token != .star || collapsed.last != .star {
                collapsed.append(token)
            }
            self.tokens = collapsed
        }

        /// The bytes the glob spells after its first `count` tokens, if they are all plain bytes.
        func literal(droppingFirst count: Int = 0) -> [UInt8]? {
            var bytes: [UInt8] = []
            for token in tokens.dropFirst(count) {
                guard case .byte(let byte) = token else { return nil }
                bytes.append(byte)
            }
            return bytes
        }

        /// Classic wildcard matching: each `*` is a backtrack point, and only the latest one needs
        /// to be retried, since a later `*` can absorb whatever an earlier one would.
        func matches(_ text: Text) -> Bool {
            var token = 0
            var byte = text.startIndex
            var retry: (token: Int, byte: Int)?
            while byte < text.endIndex {
                if token < tokens.count {
                    switch tokens[token] {
                    case .star:
                        token += 1
                        retry = (token, byte)
                        continue
                    case .any:
                        token += 1
                        byte += 1
                        continue
                    case .byte(let expected) where expected == text[byte]:
                        token += 1
                        byte += 1
                        continue
                    case .set(let set) where set.contains(text[byte]):
                        token += 1
                        byte += 1
                        continue
                    default:
                        break
                    }
                }
                guard let (starNext, starByte) = retry else { return false }
                retry = (starNext, starByte + 1)
                token = starNext
                byte = starByte + 1
            }
            while token < tokens.count, tokens[token] == .star { token += 1 }
            return token == tokens.count
        }
    }

    /// A set of bytes, one bit each.
    struct ByteSet: Sendable, Equatable {
        private var words = SIMD4<UInt64>()

        func contains(_ byte: UInt8) -> Bool {
            (words[Int(byte >> 6)] >> (byte & 63)) & 1 == 1
        }

        mutating func insert(_ range: ClosedRange<UInt8>) {
            for byte in range { words[Int(byte >> 6)] |= 1 << (byte & 63) }
        }

        /// Parses a class whose `[` comes just before `pattern`, following git's wildmatch; returns
        /// the set and the index after its `]`, or nil when the class is malformed.
        static func parseClass(_ pattern: ArraySlice<UInt8>) -> (ByteSet, Int)? {
            var set = ByteSet()
            var index = pattern.startIndex
            let negated = index < pattern.endIndex && (pattern[index] == .bang || pattern[index] == .caret)
            if negated { index += 1 }
            let first = index
            var previous: UInt8?   // the last single member, which a following `-` can extend to a range
            while index < pattern.endIndex, pattern[index] != .closeBracket || index == first {
                var byte = pattern[index]
                if byte == .backslash {
                    index += 1
                    guard index < pattern.endIndex else { return nil }
                    byte = pattern[index]
                    set.insert(byte...byte)
                    previous = byte
                } else if byte == .dash, let low = previous, index + 1 < pattern.endIndex,
                          pattern[index + 1] != .closeBracket {
                    index += 1
                    var high = pattern[index]
                    if high == .backslash {
                        index += 1
                        guard index < pattern.endIndex else { return nil }
                        high = pattern[index]
                    }
                    if low <= high { set.insert(low...high) }
                    previous = nil
                } else if byte == .openBracket, index + 1 < pattern.endIndex, pattern[index + 1] == .colon {
                    let nameStart = index + 2
                    guard let close = pattern[nameStart...].firstIndex(of: .closeBracket) else { return nil }
                    if close > nameStart, pattern[close - 1] == .colon {
                        guard let ranges = posixClass(pattern[nameStart..<(close - 1)]) else { return nil }
                        ranges.forEach { set.insert($0) }
                        previous = nil
                        index = close
                    } else {   // no `:]`: the `[` is an ordinary member
                        set.insert(byte...byte)
                        previous = byte
                    }
                } else {
                    set.insert(byte...byte)
                    previous = byte
                }
                index += 1
            }
            guard index < pattern.endIndex else { return nil }
            if negated { set.words = ~set.words }
            return (set, index + 1)
        }

        /// The ASCII members of a POSIX class, as in the C locale; nil for an unknown name.
        private static func posixClass(_ name: ArraySlice<UInt8>) -> [ClosedRange<UInt8>]? {
            let digit: [ClosedRange<UInt8>] = [48...57], upper: [ClosedRange<UInt8>] = [65...90]
            let lower: [ClosedRange<UInt8>] = [97...122]
            switch String(decoding: name, as: UTF8.self) {
            case "alnum": return digit + upper + lower
            case "alpha": return upper + lower
            case "blank": return [9...9, 32...32]
            case "cntrl": return [0...31, 127...127]
            case "digit": return digit
            case "graph": return [33...126]
            case "lower": return lower
            case "print": return [32...126]
            case "punct": return [33...47, 58...64, 91...96, 123...126]
            case "space": return [9...13, 32...32]
            case "upper": return upper
            case "xdigit": return digit + [65...70, 97...102]
            default: return nil
            }
        }
    }
}

private extension UInt8 {
    static let newline = UInt8(ascii: "\n")
    static let percent = UInt8(ascii: "%")
    static let carriageReturn = UInt8(ascii: "\r")
    static let space = UInt8(ascii: " ")
    static let hash = UInt8(ascii: "#")
    static let bang = UInt8(ascii: "!")
    static let caret = UInt8(ascii: "^")
    static let slash = UInt8(ascii: "/")
    static let backslash = UInt8(ascii: "\\")
    static let star = UInt8(ascii: "*")
    static let question = UInt8(ascii: "?")
    static let dash = UInt8(ascii: "-")
    static let colon = UInt8(ascii: ":")
    static let openBracket = UInt8(ascii: "[")
    static let closeBracket = UInt8(ascii: "]")
}
