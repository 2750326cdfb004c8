#include <stdio.h>
#include "sinkkit.h"
int main(void) { printf("%s\n", sinkkit_isa_name(sinkkit_active_isa())); return 0; }
