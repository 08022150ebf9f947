@testable import SyncCore
import XCTest

final class IgnoreRulesTests: XCTestCase {
    private func ignored(_ rules: String, _ path: String, dir: Bool = false) -> Bool {
        IgnoreRules(parsing: rules).isIgnored(path, isDirectory: dir)
    }

    func test_emptyRules_shouldIgnoreNothing() {
        XCTAssertFalse(IgnoreRules.empty.isIgnored("a.log", isDirectory: false))
        XCTAssertFalse(IgnoreRules.empty.isIgnored("src/build", isDirectory: true))
        XCTAssertFalse(ignored("*", ""), "the folder root itself")
    }

    func test_basenamePattern_shouldMatchAtAnyDepth() {
        XCTAssertTrue(ignored("*.log", "a.log"))
        XCTAssertTrue(ignored("*.log", "deep/er/a.log"))
        XCTAssertFalse(ignored("*.log", "a.log.txt"))
        XCTAssertTrue(ignored("node_modules", "web/node_modules", dir: true))
        XCTAssertFalse(ignored("node_modules", "web/node_modules_old", dir: true))
        XCTAssertTrue(ignored("a*c?.[ch]", "x/abbcd.h"), "a name glob beyond the literal fast paths")
    }

    func test_star_shouldNotCrossSlash() {
        XCTAssertTrue(ignored("doc/*.txt", "doc/a.txt"))
        XCTAssertFalse(ignored("doc/*.txt", "doc/x/a.txt"))
        XCTAssertTrue(ignored("a?c", "abc"))
        XCTAssertFalse(ignored("a/?c", "a/bbc"), "? is exactly one character")
    }

    func test_slash_shouldAnchorAtRoot() {
        XCTAssertTrue(ignored("/root.txt", "root.txt"))
        XCTAssertFalse(ignored("/root.txt", "sub/root.txt"))
        XCTAssertTrue(ignored("build/out", "build/out"))
        XCTAssertFalse(ignored("build/out", "x/build/out"), "a middle slash anchors too")
    }

    func test_doubleStar_shouldMatchAcrossDirectories() {
        XCTAssertTrue(ignored("**/foo", "foo"))
        XCTAssertTrue(ignored("**/foo", "a/b/foo"))
        XCTAssertFalse(ignored("**/foo/bar", "foo/baz"))
        XCTAssertTrue(ignored("foo/**", "foo/x/y"))
        XCTAssertFalse(ignored("foo/**", "foo", dir: true), "everything inside, not the directory")
        XCTAssertTrue(ignored("a/**/b", "a/b"))
        XCTAssertTrue(ignored("a/**/b", "a/x/b"))
        XCTAssertTrue(ignored("a/**/b", "a/x/y/b"))
        XCTAssertFalse(ignored("a/**/b", "a/x/y/c"))
        XCTAssertTrue(ignored("a**b", "axxb"), "other consecutive asterisks are a *")
        XCTAssertFalse(ignored("a/**b", "a/x/b"))
    }

    func test_trailingSlash_shouldMatchDirectoriesOnly() {
        XCTAssertTrue(ignored("tmp/", "src/tmp", dir: true))
        XCTAssertTrue(ignored("tmp/", "tmp/file.c"), "files under the directory")
        XCTAssertFalse(ignored("tmp/", "tmp"), "a file named tmp is not a directory")
    }

    func test_ignoredAncestor_shouldIgnoreEverythingBelow() {
        XCTAssertTrue(ignored("build", "build/x/y.c"))
        XCTAssertTrue(ignored("/build/", "build/x/y.c"))
        XCTAssertFalse(ignored("/build/", "src/build/y.c"))
    }

    func test_negation_shouldReincludeAndLastMatchWins() {
        let rules = "*.log\n!keep.log\n"
        XCTAssertTrue(ignored(rules, "a.log"))
        XCTAssertFalse(ignored(rules, "sub/keep.log"))
        XCTAssertTrue(ignored("!keep.log\n*.log", "keep.log"), "the later rule wins")
    }

    func test_negation_shouldNotReincludeInsideIgnoredDirectory() {
        XCTAssertTrue(ignored("build/\n!build/keep.txt\n", "build/keep.txt"))
        XCTAssertFalse(ignored("build/\n!build/\n", "build/keep.txt"), "re-including the directory works")
        XCTAssertFalse(ignored("/*\n!/src\n/src/*\n!/src/main.c", "src/main.c"))
        XCTAssertTrue(ignored("/*\n!/src\n/src/*\n!/src/main.c", "src/other.c"))
    }

    func test_characterClass_shouldMatchSetsAndRanges() {
        XCTAssertTrue(ignored("file[0-9].txt", "file7.txt"))
        XCTAssertFalse(ignored("file[0-9].txt", "filex.txt"))
        XCTAssertTrue(ignored("[abc].c", "b.c"))
        XCTAssertFalse(ignored("[abc].c", "d.c"))
        XCTAssertTrue(ignored("[]x-]", "-"), "a leading ] and a trailing - are members")
        XCTAssertTrue(ignored("v[[:digit:]]", "v3"))
        XCTAssertFalse(ignored("v[[:digit:]]", "vx"))
    }

    func test_negatedCharacterClass_shouldMatchNonMembers() {
        XCTAssertTrue(ignored("[!a]x", "bx"))
        XCTAssertFalse(ignored("[!a]x", "ax"))
        XCTAssertTrue(ignored("[^a-c]x", "dx"))
        XCTAssertFalse(ignored("[^a-c]x", "cx"))
    }

    func test_escapes_shouldMakeSpecialCharactersLiteral() {
        XCTAssertTrue(ignored("\\#x", "#x"))
        XCTAssertTrue(ignored("\\!x", "!x"))
        XCTAssertFalse(ignored("\\!x", "x"), "an escaped ! does not negate")
        XCTAssertTrue(ignored("a\\*b", "a*b"))
        XCTAssertFalse(ignored("a\\*b", "axb"))
    }

    func test_trailingSpaces_shouldBeTrimmedUnlessEscaped() {
        XCTAssertTrue(ignored("trail.txt   ", "trail.txt"))
        XCTAssertTrue(ignored("space\\ ", "space "))
        XCTAssertFalse(ignored("space\\ ", "space"))
    }

    func test_commentsAndBlankLines_shouldBeSkipped() {
        XCTAssertFalse(ignored("#notes", "#notes"))
        XCTAssertFalse(ignored("\n\n   \n# only comments\n", "anything"))
        XCTAssertTrue(ignored("# header\n\n*.o\n", "x.o"))
    }

    func test_crlfLineEndings_shouldParseLikeLf() {
        let rules = "*.o\r\n!keep.o\r\ntmp/\r\n"
        XCTAssertTrue(ignored(rules, "x.o"))
        XCTAssertFalse(ignored(rules, "keep.o"))
        XCTAssertTrue(ignored(rules, "tmp", dir: true))
    }

    func test_stateDirectory_shouldAlwaysBeIgnored() {
        XCTAssertTrue(IgnoreRules.empty.isIgnored(".syncd", isDirectory: true))
        XCTAssertTrue(ignored("!.syncd\n!.syncd/**", ".syncd/tmp/a"))
        XCTAssertFalse(IgnoreRules.empty.isIgnored(".syncdx", isDirectory: false))
        XCTAssertFalse(IgnoreRules.empty.isIgnored("a/.syncd", isDirectory: true), "only the folder's own")
    }

    func test_malformedPattern_shouldMatchNothingWithoutCrashing() {
        XCTAssertFalse(ignored("[abc", "[abc"), "an unterminated [ matches nothing, as in git")
        XCTAssertFalse(ignored("x[[:nope:]]", "xa"), "an unknown POSIX class too")
        XCTAssertTrue(ignored("[abc\n*.o", "x.o"), "the following lines still apply")
        for junk in ["[", "[!", "]", "\\", "!", "/", "**", "***", "[z-a]", "a/**/", "!/", "[[:", "a\\"] {
            _ = ignored(junk, "some/path.txt")
            _ = ignored(junk, "x", dir: true)
        }
    }

    // Paths are path text (RelativePath); patterns are the bytes of `.syncignore`.

    func test_nonASCIIPattern_matchesTheSameBytesOnly() {
        let nfcText = "caf%C3%A9", nfdText = "cafe%CC%81"
        XCTAssertTrue(ignored("caf\u{E9}", nfcText), "a literal pattern matches the name it spells")
        XCTAssertFalse(ignored("caf\u{E9}", nfdText), "byte-exact: the NFD spelling is another name")
        XCTAssertTrue(ignored("cafe\u{301}", "d/" + nfdText))
        XCTAssertTrue(ignored("*.\u{E9}t\u{E9}", "notes.%C3%A9t%C3%A9"), "suffix fast path")
        XCTAssertTrue(ignored("/caf\u{E9}/*.log", nfcText + "/x.log"), "anchored segments")
        XCTAssertFalse(ignored("caf\u{E9}", "caf%25C3%25A9"), "a name spelled like an escape is not the escape")
    }

    func test_percentInPatternOrName_isAnOrdinaryByte() {
        XCTAssertTrue(ignored("100%", "100%25"))
        XCTAssertTrue(ignored("*%", "x/50%25"))
        XCTAssertFalse(ignored("100%", "100%2525"))
    }

    func test_questionMarkAndClasses_matchOneByteOfANonASCIIName() {
        XCTAssertFalse(ignored("caf?", "caf%C3%A9"), "é is two bytes in UTF-8")
        XCTAssertTrue(ignored("caf??", "caf%C3%A9"))
        XCTAssertTrue(ignored("caf?", "caf%E9"), "a Latin-1 é is one byte")
        XCTAssertTrue(ignored("caf[!a-z]", "caf%E9"))
    }

    func test_bytePatterns_matchNamesThatAreNotUTF8() {
        let rules = IgnoreRules(parsing: Array("# latin-1\ncaf".utf8) + [0xE9, UInt8(ascii: "\n")])
        XCTAssertTrue(rules.isIgnored("caf%E9", isDirectory: false))
        XCTAssertFalse(rules.isIgnored("caf%C3%A9", isDirectory: false))
    }
}
