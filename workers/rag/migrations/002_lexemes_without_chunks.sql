-- Lexeme counts left at zero by document updates and deletes before the decrement deleted
-- them (a DELETE beside the UPDATE in one statement removed none): no chunk holds them.
DELETE FROM lexemes WHERE chunks <= 0;
